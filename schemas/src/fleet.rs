//! The identities and configuration documents of a synthetic fleet of sensor nodes: node `i`
//! is `SIM{i:03}` in room `R{i:03}` with a DHT22 (temperature, humidity) and a flame sensor.
//! The node simulator, the load generator, the tests and the benchmarks all build their nodes
//! here, so a document that one of them finds valid is valid for all of them.

use crate::topic::Location;

/// The node id of simulated node `i`.
pub fn node_id(i: usize) -> String {
    format!("SIM{i:03}")
}

/// Where simulated node `i` is.
pub fn node_location(i: usize) -> Location {
    Location::from_levels([
        "Greece",
        "Samos",
        "Karlovasi",
        "AegeanUniversityCampus",
        "indoor",
        "B",
        &format!("R{i:03}"),
    ])
}

/// A configuration document for simulated node `i`, valid under the node-configuration XSD.
pub fn node_document(network: &str, server_id: &str, i: usize) -> String {
    let l = node_location(i);
    let sensor = |name: &str, part: &str, ty: &str, units: &str, min: &str, max: &str| {
        format!(
            "<sensor><dataName>{name}</dataName><type>{part}</type><dataType>{ty}</dataType>\
             <dataUnits>{units}</dataUnits><dataRange><minValue>{min}</minValue>\
             <maxValue>{max}</maxValue></dataRange></sensor>"
        )
    };
    format!(
        r#"<?xml version="1.0"?>
<nodeConfiguration xmlns="https://www.w3schools.com">
  <nodeInfo>
    <ID>{id}</ID>
    <hardwareSetup>
      <platform>ESP8266</platform><version>ESP-12E</version><CPU>80 MHz 32-bit Tensilica L106</CPU>
      <sensors>{t}{h}{f}</sensors>
    </hardwareSetup>
    <softwareSetup><OS><name>Micropython Firmware</name><version>1.9.3</version></OS></softwareSetup>
    <networkSetup>
      <networkName>{network}</networkName><MACAddress>02:00:00:00:{hi:02x}:{lo:02x}</MACAddress>
      <IPAddress>10.0.{hi}.{lo}</IPAddress><serverID>{server_id}</serverID>
      <MQTTSetup><protocolVersion>v3.1.1</protocolVersion>
        <credentials><userName>{id}</userName><password>-</password></credentials>
        <topics><subscribeList/><publishList/></topics>
      </MQTTSetup>
    </networkSetup>
  </nodeInfo>
  <nodeLocation>
    <country>{c}</country><districtState>{d}</districtState><city>{city}</city>
    <areaDescription>{ad}</areaDescription><area>{a}</area><building>{b}</building><room>{r}</room>
    <gpsLongtitude>26.7049</gpsLongtitude><gpsLattitude>37.79209</gpsLattitude>
  </nodeLocation>
</nodeConfiguration>"#,
        id = node_id(i),
        t = sensor(
            "indoorTemperatureSensor",
            "DHT22",
            "float",
            "celsius",
            "0",
            "70"
        ),
        h = sensor(
            "indoorHumiditySensor",
            "DHT22",
            "float",
            "percent",
            "0",
            "100"
        ),
        f = sensor("flameDetectionSensor", "KY-026", "int", "adc", "0", "1024"),
        hi = i / 256,
        lo = i % 256,
        c = l.country,
        d = l.district_state,
        city = l.city,
        ad = l.area_description,
        a = l.area,
        b = l.building,
        r = l.room,
    )
}

#[cfg(all(test, feature = "node-config"))]
mod tests {
    use super::*;

    #[test]
    fn fleet_documents_are_valid() {
        for i in [0, 7, 300] {
            let c = crate::node_config::validate(&node_document("net", "SN", i))
                .unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(c.node_id, node_id(i));
            assert_eq!(c.location, node_location(i));
            assert_eq!(c.sensors.len(), 3);
        }
    }
}

#!/usr/bin/env python3
"""Scenarios run by tests/paho.rs with Eclipse paho-mqtt 2.x against a running `samos serve`.

Usage: paho_scenarios.py SCENARIO PORT [ARGS...]. Exits non-zero with a message on failure.
"""
import queue
import sys
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

V31, V311, V5 = mqtt.MQTTv31, mqtt.MQTTv311, mqtt.MQTTv5
TIMEOUT = 10


class Client:
    """A paho client with its network loop in a thread and its events in queues."""

    def __init__(self, port, client_id="", protocol=V5, clean=True, props=None,
                 keepalive=60, will=None, user=None, ca=None):
        kwargs = {}
        if protocol != V5:
            kwargs["clean_session"] = clean
        self.protocol = protocol
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=protocol, reconnect_on_failure=False, **kwargs)
        self.messages = queue.Queue()
        self.connacks = queue.Queue()
        self.subacks = queue.Queue()
        self.unsubacks = queue.Queue()
        self.disconnects = queue.Queue()
        self.pubacks = {}
        self.c.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, rc)
        self.c.on_connect = lambda c, u, flags, rc, p: self.connacks.put((flags, rc, p))
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.c.on_unsubscribe = lambda c, u, mid, rcs, p: self.unsubacks.put(rcs)
        self.c.on_disconnect = lambda c, u, flags, rc, p: self.disconnects.put(rc)
        if user:
            self.c.username_pw_set(*user)
        if ca:
            self.c.tls_set(ca_certs=ca)
        if will:
            self.c.will_set(**will)
        if protocol == V5:
            self.c.connect("127.0.0.1", port, keepalive=keepalive, clean_start=clean,
                           properties=props)
        else:
            self.c.connect("127.0.0.1", port, keepalive=keepalive)
        self.c.loop_start()
        self.flags, self.rc, self.connack_props = self.connacks.get(timeout=TIMEOUT)

    def subscribe(self, topic, qos=0, options=None, props=None):
        if options is not None:
            self.c.subscribe(topic, options=options, properties=props)
        else:
            self.c.subscribe(topic, qos, properties=props)
        return self.subacks.get(timeout=TIMEOUT)

    def publish(self, topic, payload, qos=0, retain=False, props=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        info.wait_for_publish(timeout=TIMEOUT)
        assert info.is_published(), f"publish to {topic} not acknowledged"
        return info

    def publish_rc(self, topic, payload, qos=1, props=None):
        """Publishes and returns the acknowledgement's reason code (0 for 3.x)."""
        info = self.publish(topic, payload, qos=qos, props=props)
        deadline = time.time() + TIMEOUT
        while info.mid not in self.pubacks and time.time() < deadline:
            time.sleep(0.01)
        return int(getattr(self.pubacks[info.mid], "value", 0))

    def expect(self, timeout=TIMEOUT):
        return self.messages.get(timeout=timeout)

    def expect_none(self, wait=1.0):
        try:
            m = self.messages.get(timeout=wait)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message on {m.topic}: {m.payload!r}")

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()

    def drop(self):
        """Ends the connection without DISCONNECT, as a crashed node would."""
        self.c.loop_stop()
        self.c.socket().close()


def props(packet, **values):
    p = Properties(packet)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def versions(port):
    for proto in (V31, V311, V5):
        sub = Client(port, client_id=f"sub-{proto}", protocol=proto)
        pub = Client(port, client_id=f"pub-{proto}", protocol=proto)
        rcs = sub.subscribe("v/#", 2)
        assert [int(getattr(r, "value", r)) for r in rcs] == [2], rcs
        for qos in (0, 1, 2):
            pub.publish("v/x", f"{proto}-{qos}", qos=qos)
        got = sorted((sub.expect().payload.decode(), ) for _ in range(3))
        assert got == [(f"{proto}-0",), (f"{proto}-1",), (f"{proto}-2",)], got
        for qos in (0, 1, 2):
            pass
        pub.close()
        sub.close()


def tls_with_passwords(port, ca, user, password):
    for proto in (V31, V311, V5):
        sub = Client(port, f"tls-sub-{proto}", protocol=proto, user=(user, password), ca=ca)
        pub = Client(port, f"tls-pub-{proto}", protocol=proto, user=(user, password), ca=ca)
        sub.subscribe("tls/#", 2)
        for qos in (0, 1, 2):
            pub.publish("tls/x", str(qos), qos=qos)
        got = sorted(sub.expect().payload for _ in range(3))
        assert got == [b"0", b"1", b"2"], got
        pub.close()
        sub.close()
    # A wrong password over TLS: CONNACK 0x86.
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tls-bad", protocol=V5)
    c.tls_set(ca_certs=ca)
    c.username_pw_set(user, "wrong")
    result = queue.Queue()
    c.on_connect = lambda c, u, f, rc, p: result.put(rc)
    c.connect("127.0.0.1", port)
    c.loop_start()
    rc = result.get(timeout=TIMEOUT)
    c.loop_stop()
    assert rc.value == 0x86, rc


def assigned_id_and_keepalive(port, max_keepalive):
    c = Client(port, client_id="", keepalive=0)
    cp = c.connack_props
    assert cp.AssignedClientIdentifier.startswith("samos-"), cp
    assert cp.ServerKeepAlive == int(max_keepalive), cp
    assert cp.ReceiveMaximum == 1024, cp
    assert cp.TopicAliasMaximum == 64, cp
    assert cp.MaximumPacketSize == 1048576, cp
    assert cp.SharedSubscriptionAvailable == 1 and cp.SubscriptionIdentifierAvailable == 1
    c.close()


def overlapping_subscriptions(port):
    sub = Client(port, "overlap")
    sub.subscribe("o/+", 0, props=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=1))
    sub.subscribe("o/#", 2, props=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=2))
    pub = Client(port, "overlap-pub")
    pub.publish("o/x", "once", qos=2)
    m = sub.expect()
    assert m.qos == 2, m.qos
    ids = sorted(m.properties.SubscriptionIdentifier)
    assert ids == [1, 2], ids
    sub.expect_none()
    sub.close()
    pub.close()


def no_local_and_retain_as_published(port):
    c = Client(port, "nolocal")
    c.subscribe("nl/#", options=mqtt.SubscribeOptions(qos=1, noLocal=True))
    c.subscribe("rap/#", options=mqtt.SubscribeOptions(qos=1, retainAsPublished=True))
    other = Client(port, "nolocal-other")
    c.publish("nl/a", "mine", qos=1)
    other.publish("nl/a", "theirs", qos=1)
    assert c.expect().payload == b"theirs"
    c.expect_none()
    other.publish("rap/a", "kept", qos=1, retain=True)
    m = c.expect()
    assert m.retain, "retain-as-published keeps the retain flag on live delivery"
    other.publish("rap/a", "", qos=1, retain=True)
    c.expect()
    c.close()
    other.close()


def retain_handling(port):
    pub = Client(port, "rh-pub")
    pub.publish("rh/a", "stored", qos=1, retain=True)
    c = Client(port, "rh")
    c.subscribe("rh/#", options=mqtt.SubscribeOptions(qos=1, retainHandling=2))
    c.expect_none()
    c.subscribe("rh/+", options=mqtt.SubscribeOptions(qos=1, retainHandling=1))
    assert c.expect().payload == b"stored"
    c.subscribe("rh/+", options=mqtt.SubscribeOptions(qos=1, retainHandling=1))
    c.expect_none()
    c.subscribe("rh/+", options=mqtt.SubscribeOptions(qos=1, retainHandling=0))
    m = c.expect()
    assert m.retain and m.payload == b"stored"
    pub.publish("rh/a", "", retain=True)
    c.close()
    pub.close()


def properties_pass_through(port):
    sub = Client(port, "props-sub")
    sub.subscribe("p/#", 1)
    pub = Client(port, "props-pub")
    p = props(PacketTypes.PUBLISH, ResponseTopic="p/reply", CorrelationData=b"\x01\x02",
              ContentType="text/csv", PayloadFormatIndicator=1, MessageExpiryInterval=60,
              UserProperty=[("site", "lab"), ("unit", "C")])
    pub.publish("p/req", "float,0-70,23.4", qos=1, props=p)
    m = sub.expect()
    mp = m.properties
    assert mp.ResponseTopic == "p/reply", mp
    assert mp.CorrelationData == b"\x01\x02", mp
    assert mp.ContentType == "text/csv", mp
    assert mp.PayloadFormatIndicator == 1, mp
    assert 0 < mp.MessageExpiryInterval <= 60, mp
    assert ("site", "lab") in mp.UserProperty and ("unit", "C") in mp.UserProperty, mp
    # A payload that is not the UTF-8 it claims is refused with 0x99.
    bad = props(PacketTypes.PUBLISH, PayloadFormatIndicator=1)
    pub.publish("p/bad", b"\xff\xfe", qos=1, props=bad)
    sub.expect_none()
    sub.close()
    pub.close()


def message_expiry(port):
    pub = Client(port, "exp-pub")
    pub.publish("exp/a", "short-lived", qos=1, retain=True,
                props=props(PacketTypes.PUBLISH, MessageExpiryInterval=1))
    time.sleep(2.2)
    c = Client(port, "exp-sub")
    c.subscribe("exp/#", 1)
    c.expect_none()
    c.close()
    pub.close()


def topic_alias(port):
    sub = Client(port, "alias-sub", props=props(PacketTypes.CONNECT, TopicAliasMaximum=5))
    sub.subscribe("al/#", 1)
    pub = Client(port, "alias-pub")
    pub.publish("al/long/topic/name", "1", qos=1, props=props(PacketTypes.PUBLISH, TopicAlias=3))
    pub.publish("", "2", qos=1, props=props(PacketTypes.PUBLISH, TopicAlias=3))
    # Server to client: the first delivery names the topic and sets an alias, the second
    # carries the alias alone (paho leaves resolving it to the application).
    first, second = sub.expect(), sub.expect()
    assert (first.topic, first.payload) == ("al/long/topic/name", b"1"), first.topic
    alias = first.properties.TopicAlias
    assert 1 <= alias <= 5, alias
    assert (second.topic, second.payload) == ("", b"2"), second.topic
    assert second.properties.TopicAlias == alias
    # An alias above our Topic Alias Maximum ends the connection with 0x94.
    pub.c.publish("al/x", "3", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=500))
    rc = pub.disconnects.get(timeout=TIMEOUT)
    assert rc.value == 0x94, rc
    sub.close()


def shared_subscriptions(port):
    a = Client(port, "share-a")
    b = Client(port, "share-b")
    a.subscribe("$share/g/sh/#", 1)
    b.subscribe("$share/g/sh/#", 1)
    pub = Client(port, "share-pub")
    for i in range(10):
        pub.publish("sh/x", str(i), qos=1)
    deadline = time.time() + TIMEOUT
    while a.messages.qsize() + b.messages.qsize() < 10 and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # nothing beyond the ten may arrive
    na, nb = a.messages.qsize(), b.messages.qsize()
    assert na + nb == 10 and na > 0 and nb > 0, (na, nb)
    for c in (a, b, pub):
        c.close()


def will_delay_and_session_expiry(port):
    watcher = Client(port, "will-watch")
    watcher.subscribe("will/#", 1)
    will_props = props(PacketTypes.WILLMESSAGE, WillDelayInterval=2)
    session = props(PacketTypes.CONNECT, SessionExpiryInterval=30)
    # Dies and stays away: the will arrives after its delay, not before.
    a = Client(port, "will-a", clean=True, props=session,
               will=dict(topic="will/a", payload="gone", qos=1, properties=will_props))
    a.drop()
    t0 = time.time()
    m = watcher.expect(timeout=6)
    assert m.topic == "will/a" and time.time() - t0 >= 1.5, time.time() - t0
    # Dies and comes back within the delay: no will.
    b = Client(port, "will-b", clean=True, props=session,
               will=dict(topic="will/b", payload="gone", qos=1, properties=will_props))
    b.drop()
    time.sleep(0.5)
    b2 = Client(port, "will-b", clean=False, props=session)
    assert b2.flags.session_present
    watcher.expect_none(wait=3)
    b2.close()
    # DISCONNECT with reason 0x04 asks for the will.
    c = Client(port, "will-c", will=dict(topic="will/c", payload="asked", qos=1))
    c.c.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=0x04))
    assert watcher.expect().payload == b"asked"
    watcher.close()


def session_resume(port):
    session = props(PacketTypes.CONNECT, SessionExpiryInterval=2)
    c = Client(port, "resume", clean=True, props=session)
    c.subscribe("rs/#", 1)
    c.close()
    pub = Client(port, "resume-pub")
    pub.publish("rs/a", "while away", qos=1)
    c = Client(port, "resume", clean=False, props=session)
    assert c.flags.session_present
    assert c.expect().payload == b"while away"
    c.close()
    time.sleep(3)
    c = Client(port, "resume", clean=False, props=session)
    assert not c.flags.session_present, "session outlived its expiry"
    c.close()
    pub.close()


def takeover(port):
    a = Client(port, "twin")
    b = Client(port, "twin")
    rc = a.disconnects.get(timeout=TIMEOUT)
    assert rc.value == 0x8E, rc
    b.publish("tk/x", "still here", qos=1)
    b.close()


def denied(port):
    c = Client(port, "denied")
    rcs = c.subscribe("secret/#", 1)
    assert rcs[0].value == 0x87, rcs
    info = c.c.publish("secret/x", "no", qos=1)
    info.wait_for_publish(timeout=TIMEOUT)
    c.close()


def session_expiry_on_disconnect(port):
    one = props(PacketTypes.CONNECT, SessionExpiryInterval=1)

    def leave(c, expiry):
        c.c.disconnect(properties=props(PacketTypes.DISCONNECT, SessionExpiryInterval=expiry))
        c.c.loop_stop()

    # Raised from 1 to 5 on DISCONNECT: still there 3 s later.
    c = Client(port, "sx", clean=True, props=one)
    c.subscribe("sx/#", 1)
    leave(c, 5)
    time.sleep(3)
    c = Client(port, "sx", clean=False, props=one)
    assert c.flags.session_present, "DISCONNECT raised the expiry to 5 s"
    # Cut to 0 on DISCONNECT: gone at once, even for a client that reconnects immediately.
    leave(c, 0)
    c = Client(port, "sx", clean=False, props=one)
    assert not c.flags.session_present, "DISCONNECT with expiry 0 ends the session"
    c.close()
    # Raising it from 0 is a protocol error (§3.14.2.2.2): the session still ends.
    z = Client(port, "sx0", clean=True)
    z.subscribe("sx0/#", 1)
    leave(z, 5)
    time.sleep(0.5)
    z = Client(port, "sx0", clean=False, props=one)
    assert not z.flags.session_present, "a session of expiry 0 cannot be revived on DISCONNECT"
    z.close()


def deny_inside_allow(port):
    for proto in (V311, V5):
        sub = Client(port, f"deny-sub-{proto}", protocol=proto)
        rcs = sub.subscribe("test/nosubscribe", 1)
        want = 0x87 if proto == V5 else 0x80
        assert int(getattr(rcs[0], "value", rcs[0])) == want, rcs
        rcs = sub.subscribe("test/#", 1)
        assert int(getattr(rcs[0], "value", rcs[0])) == 1, rcs
        pub = Client(port, f"deny-pub-{proto}", protocol=V5)
        # Delivered through test/#, except what the client may not receive.
        pub.publish("test/nosubscribe", "hidden", qos=1)
        pub.publish("test/open", "shown", qos=1)
        m = sub.expect()
        assert (m.topic, m.payload) == ("test/open", b"shown"), (m.topic, m.payload)
        sub.expect_none()
        # A denied publish: 0x87 to a v5 client, not routed.
        assert pub.publish_rc("test/nopublish", "no") == 0x87
        assert pub.publish_rc(f"own/deny-pub-{proto}/readonly", "no") == 0x87
        assert pub.publish_rc("own/someone-else/readonly", "yes") == 0
        sub.expect_none(wait=0.3)
        pub.close()
        sub.close()


NET = "Karlovasi_IoT_network"
LOC = "Greece/Samos/Karlovasi/AegeanUniversityCampus/indoor/A/A52"


def node_topic(node, leaf):
    return f"{NET}/{node}/{LOC}/{leaf}"


def join_node(port, node, document, protocol=V311, user=None):
    """Joins like the paper's nodes: paho's default client id (none for 3.1.1 and 5, where
    the server assigns one; a random one for 3.1), subscribed to the node's control topic.
    Returns the client and the server's answer."""
    c = Client(port, protocol=protocol, user=user)
    control = node_topic(node, "control")
    c.subscribe(control, 1)
    c.publish(control, "PUB_CONFIG_FILE, " + document, qos=1)
    return c, answer(c)


def answer(c):
    while True:
        m = c.expect()
        text = m.payload.decode()
        if text.startswith("SET_CN_FUNCTIONAL_MODE"):
            return text


def paper_nodes_any_client_id(port, configs):
    def doc(name):
        with open(f"{configs}/{name}") as f:
            return f.read()
    # node_config.xml has no serverID: blocked with the XSD's error and its line.
    c, reply = join_node(port, "CN1", doc("node_config.xml"))
    assert reply.startswith("SET_CN_FUNCTIONAL_MODE, blocked, line 48:"), reply
    assert "serverID" in reply, reply
    c.close()
    time.sleep(0.3)
    nodes = {}
    for i, (name, node, proto) in enumerate(
            [("cn1_config.xml", "CN1", V311), ("cn2_config.xml", "CN2", V31),
             ("sn_config.xml", "SN", V5)]):
        c, reply = join_node(port, node, doc(name), protocol=proto)
        assert reply == "SET_CN_FUNCTIONAL_MODE, active, normalMode", (name, reply)
        assert c.publish_rc(node_topic(node, "indoorTemperatureSensor"), f"float,0-70,2{i}.5") == 0
        nodes[node] = c
    # Another client (paho's default id too) may not speak for CN1: refused, and told so on
    # CN1's control topic, which only it hears.
    for proto in (V311, V5):
        stranger = Client(port, protocol=proto)
        stranger.subscribe(node_topic("CN1", "control"), 1)
        rc = stranger.publish_rc(node_topic("CN1", "indoorTemperatureSensor"), "float,0-70,66")
        assert rc == (0x87 if proto == V5 else 0), rc
        told = answer(stranger)
        assert told.startswith("SET_CN_FUNCTIONAL_MODE, blocked,"), told
        assert "protocol.node_identity" in told, told
        # Its join is refused while CN1's own session is connected, and answered.
        stranger.publish(node_topic("CN1", "control"), "PUB_CONFIG_FILE, " + doc("cn1_config.xml"),
                         qos=1)
        told = answer(stranger)
        assert "is connected" in told, told
        rc = stranger.publish_rc(node_topic("CN1", "control"), "PUB_CN_SEVERITY_MODE, dangerMode")
        assert rc == (0x87 if proto == V5 else 0), rc
        stranger.expect_none(wait=0.3)
        stranger.close()
    # CN1's own session heard none of it and still speaks for the node.
    nodes["CN1"].expect_none(wait=0.3)
    assert nodes["CN1"].publish_rc(node_topic("CN1", "indoorTemperatureSensor"), "float,0-70,30") == 0
    for c in nodes.values():
        c.close()


def paper_node_with_password(port, configs, user, password, other, other_password):
    with open(f"{configs}/cn1_config.xml") as f:
        document = f.read()
    c, reply = join_node(port, "CN1", document, protocol=V5, user=(user, password))
    assert reply == "SET_CN_FUNCTIONAL_MODE, active, normalMode", reply
    assert c.publish_rc(node_topic("CN1", "indoorTemperatureSensor"), "float,0-70,21") == 0
    # Another verified user may not speak for CN1, whatever its client id.
    o = Client(port, protocol=V5, user=(other, other_password))
    o.subscribe(node_topic("CN1", "control"), 1)
    assert o.publish_rc(node_topic("CN1", "indoorTemperatureSensor"), "float,0-70,22") == 0x87
    told = answer(o)
    assert "bound to the user name" in told, told
    o.publish(node_topic("CN1", "control"), "PUB_CONFIG_FILE, " + document, qos=1)
    assert "bound to the user name" in answer(o)
    c.expect_none(wait=0.3)
    o.close()
    c.close()


SCENARIOS = {f.__name__: f for f in [
    versions, tls_with_passwords, assigned_id_and_keepalive, overlapping_subscriptions,
    no_local_and_retain_as_published, retain_handling, properties_pass_through, message_expiry,
    topic_alias, shared_subscriptions, will_delay_and_session_expiry, session_resume, takeover,
    denied, session_expiry_on_disconnect, deny_inside_allow, paper_nodes_any_client_id,
    paper_node_with_password,
]}

if __name__ == "__main__":
    name, port, *rest = sys.argv[1:]
    SCENARIOS[name](int(port), *rest)
    print("OK")

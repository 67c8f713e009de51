// Window statistics of many series at once, in f32: one thread per window, two passes over it
// (sums, then centred sums) so the variance and the slope do not cancel. Values arrive centred
// on their series' mean; the host adds it back. Writes per window: count of values (gaps left
// out), min, max, mean, population standard deviation, least-squares slope per sample.

struct Params {
    window: u32,
    step: u32,
    nseries: u32,
    windows: u32, // all series together
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read> valid: array<u32>;
// Per series: first value, first window (over all series), windows, unused.
@group(0) @binding(3) var<storage, read> series: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn stats(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let w = gid.x + gid.y * groups.x * 256u;
    if (w >= p.windows) {
        return;
    }
    var s = 0u;
    while (s + 1u < p.nseries && series[s + 1u].y <= w) {
        s++;
    }
    let start = series[s].x + (w - series[s].y) * p.step;
    var n = 0.0;
    var sum = 0.0;
    var sx = 0.0;
    var lo = 0.0;
    var hi = 0.0;
    for (var x = 0u; x < p.window; x++) {
        if (valid[start + x] != 0u) {
            let v = values[start + x];
            if (n == 0.0) {
                lo = v;
                hi = v;
            }
            n += 1.0;
            sum += v;
            sx += f32(x);
            lo = min(lo, v);
            hi = max(hi, v);
        }
    }
    var mean = 0.0;
    var ss = 0.0;
    var sxx = 0.0;
    var sxy = 0.0;
    if (n > 0.0) {
        mean = sum / n;
        let mx = sx / n;
        for (var x = 0u; x < p.window; x++) {
            if (valid[start + x] != 0u) {
                let dx = f32(x) - mx;
                let dv = values[start + x] - mean;
                ss += dv * dv;
                sxx += dx * dx;
                sxy += dx * dv;
            }
        }
    }
    var slope = 0.0;
    if (sxx > 0.0) {
        slope = sxy / sxx;
    }
    var sd = 0.0;
    if (n > 0.0) {
        sd = sqrt(ss / n);
    }
    let o = w * 6u;
    out[o] = n;
    out[o + 1u] = lo;
    out[o + 2u] = hi;
    out[o + 3u] = mean;
    out[o + 4u] = sd;
    out[o + 5u] = slope;
}

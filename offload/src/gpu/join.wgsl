// Matrix-profile join of windows of A (rows i) against windows of B (columns j), in f32.
//
// A workgroup owns a tile: BAND adjacent diagonals k (j = i + k), LANES per thread, over TILE
// consecutive rows. Each thread seeds the covariance of its diagonals at the tile's first row
// (a direct sum over the window) and then steps along them with the SCAMP update
//   cov(i+1, j+1) = cov(i, j) + df[i]·dg[j] + df[j]·dg[i],
// which works on centred quantities and so keeps f32 rounding small; the next tile re-seeds, and
// so does a diagonal whose summed update magnitudes grow large against its pair's norms.
// The best candidate of each row (and, for a self-join, each column) within the tile is kept
// in workgroup memory as a key: the squared distance's f32 bits with the low 8 bits replaced by
// the lane within the band, inverted so that 0 means "none" and atomicMax picks the smallest
// distance, ties to the smallest index. The tile then writes its keys to per-band slots, and
// `reduce` folds a batch of bands into the running profile.

const TILE: u32 = 1024u;
const THREADS: u32 = 64u;
const LANES: u32 = 4u;
const BAND: u32 = 256u; // THREADS * LANES
const LANE_BITS: u32 = 0xffu;
// Re-seed a diagonal once u · drift / (norm_a · norm_b) could exceed 2^-16 in correlation
// (u = 2^-24, f32's unit roundoff): drift · (1/norm_a) · (1/norm_b) > 2^8.
const RESEED: f32 = 256.0;

struct Params {
    la: u32,        // windows of A
    lb: u32,        // windows of B
    m: u32,         // window length
    self_join: u32, // 1: A is B, record columns too
    k_first: i32,   // diagonal of lane 0 of band 0
    band0: u32,     // first band of this batch
    nbands: u32,    // bands in this batch
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// Centred values (gaps as 0), then each window's mean, as (f32 value, f32 of the remainder).
@group(0) @binding(1) var<storage, read> xa: array<vec2<f32>>;
// Per window: (unused), 1/norm (0: constant window, -1: window with a gap), df, dg.
@group(0) @binding(2) var<storage, read> sa: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> xb: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read> sb: array<vec4<f32>>;
// Inverted keys: rows[band][i], cols[band][tile parity][j].
@group(0) @binding(5) var<storage, read_write> rows: array<u32>;
@group(0) @binding(6) var<storage, read_write> cols: array<u32>;
// The running profile: (squared-distance bits, index as i32 bits).
@group(0) @binding(7) var<storage, read_write> best: array<vec2<u32>>;

var<workgroup> row_keys: array<atomic<u32>, TILE>;
var<workgroup> col_keys: array<atomic<u32>, 1280>; // TILE + BAND

// The covariance of A's window i and B's window j, summed directly over the window. Values and
// means are split into f32 pairs (high part, the rest), and the differences taken part by part,
// so a quiet window far from its series' mean keeps its digits.
fn seed(i: u32, j: u32) -> f32 {
    let ma = xa[p.la + p.m - 1u + i];
    let mb = xb[p.lb + p.m - 1u + j];
    var acc = 0.0;
    for (var q = 0u; q < p.m; q++) {
        let a = xa[i + q];
        let b = xb[j + q];
        acc += ((a.x - ma.x) + (a.y - ma.y)) * ((b.x - mb.x) + (b.y - mb.y));
    }
    return acc;
}

@compute @workgroup_size(64)
fn join(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let kb0 = p.k_first + i32((p.band0 + wg.y) * BAND);
    let r0 = wg.x * TILE;
    // Rows of the tile on which some diagonal of the band is inside B (0 <= i + k < lb).
    let lo = max(i32(r0), -(kb0 + i32(BAND) - 1));
    let hi = min(min(i32(r0 + TILE), i32(p.la)), i32(p.lb) - kb0);
    if (lo >= hi) {
        return;
    }
    for (var c = lid; c < TILE; c += THREADS) {
        atomicStore(&row_keys[c], 0u);
    }
    for (var c = lid; c < TILE + BAND; c += THREADS) {
        atomicStore(&col_keys[c], 0u);
    }
    workgroupBarrier();

    let lane0 = lid * LANES;
    let lanes = vec4<u32>(lane0) + vec4<u32>(0u, 1u, 2u, 3u);
    let kv = vec4<i32>(kb0 + i32(lane0)) + vec4<i32>(0, 1, 2, 3);
    let mf = f32(p.m);
    let last_b = vec4<i32>(i32(p.lb) - 1);
    let s0 = u32(lo) - r0;
    let s1 = u32(hi) - r0;
    var cov = vec4<f32>(0.0);
    // Per lane: the sum of the update terms' magnitudes since its seed (bounds their rounding).
    var drift = vec4<f32>(0.0);
    var a_prev = vec4<f32>(0.0);
    var b_prev = array<vec4<f32>, 4>();
    for (var s = s0; s < s1; s++) {
        let i = r0 + s;
        let j = vec4<i32>(i32(i)) + kv;
        let inside = (j >= vec4<i32>(0)) & (j <= last_b);
        let jc = vec4<u32>(clamp(j, vec4<i32>(0), last_b));
        let a = sa[i];
        let b = array<vec4<f32>, 4>(sb[jc.x], sb[jc.y], sb[jc.z], sb[jc.w]);
        if (s != s0) {
            let dg_b = vec4<f32>(b_prev[0].w, b_prev[1].w, b_prev[2].w, b_prev[3].w);
            let df_b = vec4<f32>(b_prev[0].z, b_prev[1].z, b_prev[2].z, b_prev[3].z);
            let ta = a_prev.z * dg_b;
            let tb = df_b * a_prev.w;
            cov += ta + tb;
            drift += abs(ta) + abs(tb);
        }
        a_prev = a;
        b_prev = b;

        let inv_b = vec4<f32>(b[0].y, b[1].y, b[2].y, b[3].y);
        // Seed a diagonal at the tile's first row and where it enters B (j = 0, diagonals below
        // the main one); re-seed it where the rounding its updates may have accumulated is too
        // large a part of this pair's norms (a quiet window after loud ones). For a window with
        // a gap or a constant one (a.y or inv_b <= 0) the test means nothing: at worst a needless
        // seed, as its distance is not taken from cov.
        let stale = drift * (a.y * inv_b) > vec4<f32>(RESEED);
        let fresh = inside & (vec4<bool>(s == s0) | (j == vec4<i32>(0)) | stale);
        if (any(fresh)) {
            for (var q = 0u; q < LANES; q++) {
                if (fresh[q]) {
                    cov[q] = seed(i, jc[q]);
                    drift[q] = 0.0;
                }
            }
        }
        var d2 = clamp(2.0 * mf * (1.0 - cov * a.y * inv_b), vec4<f32>(0.0), vec4<f32>(4.0 * mf));
        let const_a = vec4<bool>(a.y == 0.0);
        let const_b = inv_b == vec4<f32>(0.0);
        d2 = select(d2, select(vec4<f32>(mf), vec4<f32>(0.0), const_a & const_b), const_a | const_b);
        let ok = inside & (inv_b >= vec4<f32>(0.0)) & vec4<bool>(a.y >= 0.0);
        let bits = bitcast<vec4<u32>>(d2) & vec4<u32>(~LANE_BITS);

        let rk = select(vec4<u32>(0u), ~(bits | lanes), ok);
        let row_best = max(max(rk.x, rk.y), max(rk.z, rk.w));
        if (row_best != 0u) {
            atomicMax(&row_keys[s], row_best);
        }
        if (p.self_join != 0u) {
            // Column j's slot in the tile: j - (r0 + kb0) = s + lane.
            let ck = select(vec4<u32>(0u), ~(bits | (vec4<u32>(LANE_BITS) - lanes)), ok);
            for (var q = 0u; q < LANES; q++) {
                if (ck[q] != 0u) {
                    atomicMax(&col_keys[s + lane0 + q], ck[q]);
                }
            }
        }
    }
    workgroupBarrier();

    for (var c = lid; c < TILE; c += THREADS) {
        let i = r0 + c;
        if (i < p.la) {
            rows[wg.y * p.la + i] = atomicLoad(&row_keys[c]);
        }
    }
    if (p.self_join != 0u) {
        // Adjacent tiles of a band share BAND - 1 columns: they write to slots of either parity.
        let slot = (wg.y * 2u + (wg.x & 1u)) * p.lb;
        for (var c = lid; c < TILE + BAND; c += THREADS) {
            let j = i32(r0 + c) + kb0;
            if (j >= 0 && j < i32(p.lb)) {
                cols[slot + u32(j)] = atomicLoad(&col_keys[c]);
            }
        }
    }
}

fn offer(current: vec2<u32>, bits: u32, index: i32) -> vec2<u32> {
    if (bits < current.x || (bits == current.x && index < bitcast<i32>(current.y))) {
        return vec2<u32>(bits, bitcast<u32>(index));
    }
    return current;
}

@compute @workgroup_size(256)
fn reduce(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let pos = gid.x + gid.y * groups.x * 256u;
    if (pos >= p.la) {
        return;
    }
    var current = best[pos];
    for (var b = 0u; b < p.nbands; b++) {
        let kb0 = p.k_first + i32((p.band0 + b) * BAND);
        let r = rows[b * p.la + pos];
        if (r != 0u) {
            let key = ~r;
            current = offer(current, key & ~LANE_BITS, i32(pos) + kb0 + i32(key & LANE_BITS));
        }
        if (p.self_join != 0u) {
            for (var parity = 0u; parity < 2u; parity++) {
                let c = cols[(b * 2u + parity) * p.lb + pos];
                if (c != 0u) {
                    let key = ~c;
                    let lane = LANE_BITS - (key & LANE_BITS);
                    current = offer(current, key & ~LANE_BITS, i32(pos) - kb0 - i32(lane));
                }
            }
        }
    }
    best[pos] = current;
}

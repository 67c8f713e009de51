// The Verilator-compiled model of hw/rtl/samos_mine.v behind a C interface: one clock per
// tick, the AXI4-Lite and AXI4-Stream handshakes driven exactly as a host bridge would.
// Inputs change while the clock is low; a transfer happens on a rising edge where both
// VALID and READY were high.
#include <cstdint>
#include <cstddef>

#include "Vsamos_mine.h"
#include "verilated.h"

namespace {

struct Sim {
    VerilatedContext ctx;
    Vsamos_mine top{&ctx};
    uint64_t cycles = 0;
};

void settle(Sim* s) {
    s->top.clk = 0;
    s->top.eval();
}

void tick(Sim* s) {
    s->top.clk = 0;
    s->top.eval();
    s->top.clk = 1;
    s->top.eval();
    s->cycles++;
}

}  // namespace

extern "C" {

void* samos_sim_new() {
    Sim* s = new Sim();
    s->top.rst_n = 0;
    s->top.s_axil_awvalid = 0;
    s->top.s_axil_wvalid = 0;
    s->top.s_axil_wstrb = 0xF;
    s->top.s_axil_bready = 1;
    s->top.s_axil_arvalid = 0;
    s->top.s_axil_rready = 1;
    s->top.s_axis_tvalid = 0;
    s->top.s_axis_tlast = 0;
    s->top.m_axis_tready = 0;
    for (int i = 0; i < 4; i++) tick(s);
    s->top.rst_n = 1;
    tick(s);
    return s;
}

void samos_sim_free(void* sim) {
    Sim* s = static_cast<Sim*>(sim);
    s->top.final();
    delete s;
}

uint64_t samos_sim_cycles(void* sim) { return static_cast<Sim*>(sim)->cycles; }

// 0 on success, -1 if the slave never answered within `limit` cycles.
int samos_sim_write(void* sim, uint32_t addr, uint32_t data, uint64_t limit) {
    Sim* s = static_cast<Sim*>(sim);
    s->top.s_axil_awaddr = addr;
    s->top.s_axil_wdata = data;
    s->top.s_axil_awvalid = 1;
    s->top.s_axil_wvalid = 1;
    uint64_t n = 0;
    for (;;) {
        settle(s);
        bool fire = s->top.s_axil_awready && s->top.s_axil_wready;
        tick(s);
        if (fire) break;
        if (++n > limit) return -1;
    }
    s->top.s_axil_awvalid = 0;
    s->top.s_axil_wvalid = 0;
    while (!s->top.s_axil_bvalid) {
        tick(s);
        if (++n > limit) return -1;
    }
    tick(s);  // BREADY is high: the response is taken on this edge
    return 0;
}

int samos_sim_read(void* sim, uint32_t addr, uint32_t* data, uint64_t limit) {
    Sim* s = static_cast<Sim*>(sim);
    s->top.s_axil_araddr = addr;
    s->top.s_axil_arvalid = 1;
    uint64_t n = 0;
    for (;;) {
        settle(s);
        bool fire = s->top.s_axil_arready;
        tick(s);
        if (fire) break;
        if (++n > limit) return -1;
    }
    s->top.s_axil_arvalid = 0;
    while (!s->top.s_axil_rvalid) {
        tick(s);
        if (++n > limit) return -1;
    }
    *data = s->top.s_axil_rdata;
    tick(s);  // RREADY is high
    return 0;
}

// Pushes `n_in` words into the host-to-card stream while taking `n_out` words from the
// card-to-host one, both at up to one word per cycle. 0 on success, -1 after `limit` cycles.
int samos_sim_stream(void* sim, const uint32_t* in, size_t n_in, uint32_t* out, size_t n_out,
                     uint64_t limit) {
    Sim* s = static_cast<Sim*>(sim);
    size_t i = 0, o = 0;
    uint64_t n = 0;
    while (i < n_in || o < n_out) {
        s->top.s_axis_tvalid = i < n_in;
        s->top.s_axis_tdata = i < n_in ? in[i] : 0;
        s->top.s_axis_tlast = i + 1 == n_in;
        s->top.m_axis_tready = o < n_out;
        settle(s);
        bool in_fire = s->top.s_axis_tvalid && s->top.s_axis_tready;
        bool out_fire = s->top.m_axis_tvalid && s->top.m_axis_tready;
        if (out_fire) out[o] = s->top.m_axis_tdata;
        tick(s);
        if (in_fire) i++;
        if (out_fire) o++;
        if (++n > limit) {
            s->top.s_axis_tvalid = 0;
            s->top.m_axis_tready = 0;
            return -1;
        }
    }
    s->top.s_axis_tvalid = 0;
    s->top.s_axis_tlast = 0;
    s->top.m_axis_tready = 0;
    return 0;
}

// Clocks until the interrupt line rises (the host enables it for DONE and ERROR).
// 0 when it rose, -1 after `limit` cycles.
int samos_sim_wait_irq(void* sim, uint64_t limit) {
    Sim* s = static_cast<Sim*>(sim);
    for (uint64_t n = 0; n < limit; n++) {
        settle(s);
        if (s->top.irq) return 0;
        tick(s);
    }
    return -1;
}

}  // extern "C"

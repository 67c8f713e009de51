// The Verilator-compiled models of hw/rtl/samos_mine.v (one per lane count that build.rs
// built) behind a C interface: one clock per tick, the AXI4-Lite and AXI4-Stream handshakes
// driven exactly as a host bridge would. Inputs change while the clock is low; a transfer
// happens on a rising edge where both VALID and READY were high.
#include <cstdint>
#include <cstddef>

#include "verilated.h"
// Written by build.rs: the models' headers and SAMOS_SIM_MODELS(X), X(lanes, class) for each.
#include "sim_models.h"

namespace {

// One model instance, whatever its lane count.
struct Sim {
    virtual ~Sim() = default;
    virtual int write(uint32_t addr, uint32_t data, uint64_t limit) = 0;
    virtual int read(uint32_t addr, uint32_t* data, uint64_t limit) = 0;
    virtual int stream(const uint32_t* in, size_t n_in, uint32_t* out, size_t n_out,
                       uint64_t limit) = 0;
    virtual int wait_irq(uint64_t limit) = 0;
    uint64_t cycles = 0;
};

template <class Model>
struct SimOf final : Sim {
    VerilatedContext ctx;
    Model top{&ctx};

    SimOf() {
        top.rst_n = 0;
        top.s_axil_awvalid = 0;
        top.s_axil_wvalid = 0;
        top.s_axil_wstrb = 0xF;
        top.s_axil_bready = 1;
        top.s_axil_arvalid = 0;
        top.s_axil_rready = 1;
        top.s_axis_tvalid = 0;
        top.s_axis_tlast = 0;
        top.m_axis_tready = 0;
        for (int i = 0; i < 4; i++) tick();
        top.rst_n = 1;
        tick();
    }
    ~SimOf() override { top.final(); }

    void settle() {
        top.clk = 0;
        top.eval();
    }
    void tick() {
        top.clk = 0;
        top.eval();
        top.clk = 1;
        top.eval();
        cycles++;
    }

    // 0 on success, -1 if the slave never answered within `limit` cycles.
    int write(uint32_t addr, uint32_t data, uint64_t limit) override {
        top.s_axil_awaddr = addr;
        top.s_axil_wdata = data;
        top.s_axil_awvalid = 1;
        top.s_axil_wvalid = 1;
        uint64_t n = 0;
        for (;;) {
            settle();
            bool fire = top.s_axil_awready && top.s_axil_wready;
            tick();
            if (fire) break;
            if (++n > limit) return -1;
        }
        top.s_axil_awvalid = 0;
        top.s_axil_wvalid = 0;
        while (!top.s_axil_bvalid) {
            tick();
            if (++n > limit) return -1;
        }
        tick();  // BREADY is high: the response is taken on this edge
        return 0;
    }

    int read(uint32_t addr, uint32_t* data, uint64_t limit) override {
        top.s_axil_araddr = addr;
        top.s_axil_arvalid = 1;
        uint64_t n = 0;
        for (;;) {
            settle();
            bool fire = top.s_axil_arready;
            tick();
            if (fire) break;
            if (++n > limit) return -1;
        }
        top.s_axil_arvalid = 0;
        while (!top.s_axil_rvalid) {
            tick();
            if (++n > limit) return -1;
        }
        *data = top.s_axil_rdata;
        tick();  // RREADY is high
        return 0;
    }

    // Pushes `n_in` words into the host-to-card stream while taking `n_out` words from the
    // card-to-host one, both at up to one word per cycle. 0 on success, -1 after `limit`
    // cycles.
    int stream(const uint32_t* in, size_t n_in, uint32_t* out, size_t n_out,
               uint64_t limit) override {
        size_t i = 0, o = 0;
        uint64_t n = 0;
        while (i < n_in || o < n_out) {
            top.s_axis_tvalid = i < n_in;
            top.s_axis_tdata = i < n_in ? in[i] : 0;
            top.s_axis_tlast = i + 1 == n_in;
            top.m_axis_tready = o < n_out;
            settle();
            bool in_fire = top.s_axis_tvalid && top.s_axis_tready;
            bool out_fire = top.m_axis_tvalid && top.m_axis_tready;
            if (out_fire) out[o] = top.m_axis_tdata;
            tick();
            if (in_fire) i++;
            if (out_fire) o++;
            if (++n > limit) {
                top.s_axis_tvalid = 0;
                top.m_axis_tready = 0;
                return -1;
            }
        }
        top.s_axis_tvalid = 0;
        top.s_axis_tlast = 0;
        top.m_axis_tready = 0;
        return 0;
    }

    // Clocks until the interrupt line rises (the host enables it for DONE and ERROR).
    // 0 when it rose, -1 after `limit` cycles.
    int wait_irq(uint64_t limit) override {
        for (uint64_t n = 0; n < limit; n++) {
            settle();
            if (top.irq) return 0;
            tick();
        }
        return -1;
    }
};

}  // namespace

extern "C" {

// The lane counts built, in increasing order; returns how many (at most `cap` are written).
size_t samos_sim_lane_counts(uint32_t* lanes, size_t cap) {
    size_t n = 0;
#define SAMOS_SIM_LIST(l, M) \
    if (n < cap) lanes[n] = l; \
    n++;
    SAMOS_SIM_MODELS(SAMOS_SIM_LIST)
#undef SAMOS_SIM_LIST
    return n;
}

// A reset model with `lanes` JOIN lanes; null if no such model was built.
void* samos_sim_new(uint32_t lanes) {
#define SAMOS_SIM_NEW(l, M) \
    if (lanes == l) return static_cast<Sim*>(new SimOf<M>());
    SAMOS_SIM_MODELS(SAMOS_SIM_NEW)
#undef SAMOS_SIM_NEW
    return nullptr;
}

void samos_sim_free(void* sim) { delete static_cast<Sim*>(sim); }

uint64_t samos_sim_cycles(void* sim) { return static_cast<Sim*>(sim)->cycles; }

int samos_sim_write(void* sim, uint32_t addr, uint32_t data, uint64_t limit) {
    return static_cast<Sim*>(sim)->write(addr, data, limit);
}

int samos_sim_read(void* sim, uint32_t addr, uint32_t* data, uint64_t limit) {
    return static_cast<Sim*>(sim)->read(addr, data, limit);
}

int samos_sim_stream(void* sim, const uint32_t* in, size_t n_in, uint32_t* out, size_t n_out,
                     uint64_t limit) {
    return static_cast<Sim*>(sim)->stream(in, n_in, out, n_out, limit);
}

int samos_sim_wait_irq(void* sim, uint64_t limit) {
    return static_cast<Sim*>(sim)->wait_irq(limit);
}

}  // extern "C"

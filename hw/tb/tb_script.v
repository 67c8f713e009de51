// Script-driven test bench for samos_mine: a bus-functional model of the host that reads one
// transaction per line from the file named by +script=PATH and checks every response.
//
//   W addr data          AXI4-Lite write
//   R addr expect mask   AXI4-Lite read; (data & mask) must equal expect
//   S word               push one word into the host-to-card stream
//   E word               pop one word from the card-to-host stream; it must equal word (every
//                        word that does not is reported, and the script fails at Q)
//   X                    pop one word and ignore it (a result the reference leaves open)
//   D code               poll STATUS until DONE; the error code must equal code
//   Q                    end of script
//
// Prints "PASS <checks>" or "FAIL ..." and finishes; a watchdog ends a hung run.
`timescale 1ns / 1ps
`default_nettype none

module tb_script #(
    parameter LANES = 1      // JOIN lanes of the kernel under test (iverilog -P tb_script.LANES=N)
);
    reg clk = 1'b0;
    reg rst_n = 1'b0;
    always #5 clk = ~clk;

    reg  [7:0]  awaddr = 0;  reg awvalid = 0;  wire awready;
    reg  [31:0] wdata = 0;   reg wvalid = 0;   wire wready;
    wire [1:0]  bresp;       wire bvalid;      reg bready = 1'b1;
    reg  [7:0]  araddr = 0;  reg arvalid = 0;  wire arready;
    wire [31:0] rdata;       wire [1:0] rresp; wire rvalid;  reg rready = 1'b1;
    reg  [31:0] s_tdata = 0; reg s_tvalid = 0; wire s_tready; reg s_tlast = 0;
    wire [31:0] m_tdata;     wire m_tvalid;    reg m_tready = 1'b0;  wire m_tlast;
    wire irq;

    samos_mine #(.MEM_AW(14), .LANES(LANES)) dut (
        .clk(clk), .rst_n(rst_n),
        .s_axil_awaddr(awaddr), .s_axil_awvalid(awvalid), .s_axil_awready(awready),
        .s_axil_wdata(wdata), .s_axil_wstrb(4'hF), .s_axil_wvalid(wvalid), .s_axil_wready(wready),
        .s_axil_bresp(bresp), .s_axil_bvalid(bvalid), .s_axil_bready(bready),
        .s_axil_araddr(araddr), .s_axil_arvalid(arvalid), .s_axil_arready(arready),
        .s_axil_rdata(rdata), .s_axil_rresp(rresp), .s_axil_rvalid(rvalid), .s_axil_rready(rready),
        .s_axis_tdata(s_tdata), .s_axis_tvalid(s_tvalid), .s_axis_tready(s_tready),
        .s_axis_tlast(s_tlast),
        .m_axis_tdata(m_tdata), .m_axis_tvalid(m_tvalid), .m_axis_tready(m_tready),
        .m_axis_tlast(m_tlast), .irq(irq)
    );

    integer fd, r, checks, line, mismatches;
    reg [7:0] cmd;
    reg [31:0] a, b, c, got;
    reg [8*256-1:0] path;

    task fail;
        begin
            $display("FAIL at script line %0d", line);
            $finish;
        end
    endtask

    task axil_write(input [7:0] addr, input [31:0] data);
        begin
            @(negedge clk);
            awaddr = addr; wdata = data; awvalid = 1'b1; wvalid = 1'b1;
            @(posedge clk);
            while (!(awready && wready)) @(posedge clk);
            @(negedge clk);
            awvalid = 1'b0; wvalid = 1'b0;
            while (!bvalid) @(negedge clk);
        end
    endtask

    task axil_read(input [7:0] addr, output [31:0] data);
        begin
            @(negedge clk);
            araddr = addr; arvalid = 1'b1;
            @(posedge clk);
            while (!arready) @(posedge clk);
            @(negedge clk);
            arvalid = 1'b0;
            while (!rvalid) @(negedge clk);
            data = rdata;
        end
    endtask

    task push(input [31:0] word);
        begin
            @(negedge clk);
            s_tdata = word; s_tvalid = 1'b1;
            @(posedge clk);
            while (!s_tready) @(posedge clk);
            @(negedge clk);
            s_tvalid = 1'b0;
        end
    endtask

    task pop(output [31:0] word);
        begin
            @(negedge clk);
            m_tready = 1'b1;
            @(posedge clk);
            while (!m_tvalid) @(posedge clk);
            word = m_tdata;
            @(negedge clk);
            m_tready = 1'b0;
        end
    endtask

    initial begin : watchdog
        #(64'd2_000_000_000);
        $display("FAIL: watchdog after 2e8 cycles at script line %0d", line);
        $finish;
    end

    initial begin
        if (!$value$plusargs("script=%s", path)) begin
            $display("FAIL: no +script=PATH");
            $finish;
        end
        fd = $fopen(path, "r");
        if (fd == 0) begin
            $display("FAIL: cannot open the script");
            $finish;
        end
        checks = 0; line = 0; mismatches = 0;
        repeat (4) @(posedge clk);
        rst_n = 1'b1;
        forever begin
            line = line + 1;
            r = $fscanf(fd, " %c", cmd);
            if (r != 1) begin
                $display("FAIL: script ends without Q");
                $finish;
            end
            case (cmd)
                "W": begin
                    r = $fscanf(fd, " %h %h", a, b);
                    axil_write(a[7:0], b);
                end
                "R": begin
                    r = $fscanf(fd, " %h %h %h", a, b, c);
                    axil_read(a[7:0], got);
                    checks = checks + 1;
                    if ((got & c) !== b) begin
                        $display("register %h: got %h, want %h (mask %h)", a[7:0], got, b, c);
                        fail;
                    end
                end
                "S": begin
                    r = $fscanf(fd, " %h", a);
                    push(a);
                end
                "E": begin
                    r = $fscanf(fd, " %h", a);
                    pop(got);
                    checks = checks + 1;
                    if (got !== a) begin
                        // every wrong word is reported; the script fails at its end
                        $display("stream word at script line %0d: got %h, want %h", line, got, a);
                        mismatches = mismatches + 1;
                    end
                end
                "X": pop(got);
                "D": begin
                    r = $fscanf(fd, " %h", a);
                    got = 0;
                    while (!got[1]) axil_read(8'h10, got);
                    checks = checks + 1;
                    if (got[15:8] !== a[7:0]) begin
                        $display("error code: got %h, want %h", got[15:8], a[7:0]);
                        fail;
                    end
                    axil_write(8'h10, 32'h6);
                end
                "Q": begin
                    if (mismatches != 0) begin
                        $display("FAIL: %0d stream words differ", mismatches);
                        $finish;
                    end
                    $display("PASS %0d", checks);
                    $finish;
                end
                default: begin
                    $display("FAIL: unknown command '%c'", cmd);
                    $finish;
                end
            endcase
        end
    end
endmodule

`default_nettype wire

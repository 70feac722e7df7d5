"""The Jetson benchmark's tegrastats parser on real lines of JetPack 4, 5 and 6 releases."""
from __future__ import annotations

import pytest

from benchmarks.jetson.tegrastats import parse_line, power_summary

# JetPack 6 (L4T R36), Orin NX/Nano: timestamp, VDD_IN board rail, lower-case temperatures, NVDLA0 field.
# From github.com/rbonghi/jetson_stats issue #624 (2025-05-15, "NVENC and NVDEC utilization is still missing").
JP6_ORIN_NX = (
    "05-15-2025 18:30:28 RAM 6982/7620MB (lfb 5x1MB) SWAP 2640/16384MB (cached 202MB) CPU [97%@1984,95%@1984,"
    "95%@1984,91%@1984,88%@1984,93%@247] EMC_FREQ 18%@3199 GR3D_FREQ 84%@[713] NVENC 1%@115 NVDEC 40%@115 NVJPG off "
    "NVJPG1 off VIC 31%@115 OFA off NVDLA0 off PVA0_FREQ off APE 174 cv0@63.031C cpu@65.562C soc2@64.156C "
    "soc0@63.031C cv1@62.937C gpu@63.5C tj@65.562C soc1@64.718C cv2@60.875C VDD_IN 17946mW/15710mW "
    "VDD_CPU_GPU_CV 8896mW/7585mW VDD_SOC 3923mW/3515mW")
# JetPack 5 (L4T R35, kernel 5.10.65), AGX Orin 32GB: no board-input rail, NC rails, -256C for powered-down sensors.
# From the CRNCH Rogues Gallery "Rudi - Jetson Dev Boards" page (node rudi2, 2023-10-16), found through the
# code search corpus.
JP5_AGX_ORIN = (
    "10-16-2023 10:59:22 RAM 1205/30623MB (lfb 6429x4MB) SWAP 0/15311MB (cached 0MB) CPU [0%@729,0%@729,1%@729,"
    "0%@729,0%@729,0%@730,0%@730,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@204 GR3D_FREQ 0%@114 "
    "GR3D2_FREQ 0%@114 NVJPG1 729 VIC_FREQ 729 APE 233 CV0@-256C CPU@43.5C Tdiode@32.5C SOC2@40.062C SOC0@40.5C "
    "CV1@-256C GPU@38.156C SOC1@39.125C CV2@-256C VDD_GPU_SOC 4788mW/4788mW VDD_CPU_CV 798mW/798mW "
    "VIN_SYS_5V0 3842mW/3842mW NC 0mW/0mW VDDQ_VDD2_1V8AO 707mW/707mW NC 0mW/0mW")
# JetPack 5.1 AGX Orin 64GB (catid's Orin setup notes, "sudo tegrastats" on 2023-04-24, JetPack v51 wheels).
JP5_AGX_ORIN_64 = (
    "04-24-2023 00:01:24 RAM 1282/62795MB (lfb 15152x4MB) SWAP 0/31398MB (cached 0MB) CPU [0%@729,0%@729,0%@729,"
    "0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 0%@0 GR3D2_FREQ 0%@0 "
    "VIC_FREQ 729 APE 174 CV0@-256C CPU@42.593C Tboard@32C SOC2@39.343C Tdiode@33.25C SOC0@39.375C CV1@-256C "
    "GPU@-256C tj@42.593C SOC1@40.468C CV2@-256C VDD_GPU_SOC 2399mW/2399mW VDD_CPU_CV 400mW/400mW "
    "VIN_SYS_5V0 4032mW/4032mW NC 0mW/0mW VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW")
# JetPack 4 (L4T R32), six-core Jetson: no timestamp, rails without units.
# From github.com/FindHao/tx-utils issue #3 (2019-09-05, "does not accommodate with the latest tegrastats").
JP4 = (
    "RAM 2020/7852MB (lfb 1164x4MB) CPU [9%@345,21%@345,25%@345,3%@345,1%@345,1%@345] EMC_FREQ 0% GR3D_FREQ 0% "
    "PLL@42.5C MCPU@42.5C PMIC@100C Tboard@40C GPU@41C BCPU@42.5C thermal@41.9C Tdiode@41.25C VDD_SYS_GPU 153/158 "
    "VDD_SYS_SOC 536/547 VDD_4V0_WIFI 633/527 VDD_IN 3140/3208 VDD_SYS_CPU 536/590 VDD_SYS_DDR 557/601")


def test_jetpack6_orin_nx():
    s = parse_line(JP6_ORIN_NX)
    assert s.stamp == "05-15-2025 18:30:28"
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb) == (6982, 7620, 2640)
    assert s.cpu_load == (97, 95, 95, 91, 88, 93) and s.gpu_load == 84
    assert s.rails_mw == {"VDD_IN": 17946, "VDD_CPU_GPU_CV": 8896, "VDD_SOC": 3923}  # instant, not the average
    assert s.temps_c["gpu"] == 63.5 and s.temps_c["tj"] == 65.562 and len(s.temps_c) == 9
    assert s.board_power_mw() == (17946, "VDD_IN")


@pytest.mark.parametrize("line, ram, rails, total", [
    (JP5_AGX_ORIN, (1205, 30623), {"VDD_GPU_SOC": 4788, "VDD_CPU_CV": 798, "VIN_SYS_5V0": 3842, "VDDQ_VDD2_1V8AO": 707},
     4788 + 798 + 3842 + 707),
    (JP5_AGX_ORIN_64, (1282, 62795), {"VDD_GPU_SOC": 2399, "VDD_CPU_CV": 400, "VIN_SYS_5V0": 4032,
                                      "VDDQ_VDD2_1V8AO": 301}, 2399 + 400 + 4032 + 301),
])
def test_jetpack5_agx_orin_has_no_board_rail_so_the_rails_are_summed(line, ram, rails, total):
    s = parse_line(line)
    assert (s.ram_used_mb, s.ram_total_mb) == ram and s.stamp is not None
    assert s.rails_mw == rails  # the unwired NC rails are dropped
    assert len(s.cpu_load) == 12 and s.gpu_load == 0
    assert "CV0" not in s.temps_c and s.temps_c["CPU"] > 40  # -256 C: sensor powered down
    mw, how = s.board_power_mw()
    assert mw == total and how.startswith("sum of VDD_GPU_SOC")


def test_jetpack4_rails_without_units():
    s = parse_line(JP4)
    assert s.stamp is None and s.swap_used_mb is None
    assert s.rails_mw["VDD_SYS_GPU"] == 153 and s.board_power_mw() == (3140, "VDD_IN")
    assert s.temps_c["PMIC"] == 100.0 and s.cpu_load[1] == 21


def test_offline_cores_and_bad_lines():
    s = parse_line("RAM 10/20MB CPU [5%@100,off,off] VDD_IN 1000mW/1000mW")
    assert s.cpu_load == (5, None, None)
    with pytest.raises(ValueError, match="not a tegrastats line"):
        parse_line("Usage: tegrastats [-option]")


def test_power_summary_gives_energy_per_frame():
    samples = [parse_line(JP6_ORIN_NX), parse_line(JP6_ORIN_NX.replace("VDD_IN 17946mW", "VDD_IN 15946mW"))]
    p = power_summary(samples, seconds=2.0, frames=10)
    assert p["power_w"] == pytest.approx(16.946) and p["energy_per_frame_j"] == pytest.approx(16.946 * 2 / 10, rel=1e-3)
    assert p["measured_as"] == "VDD_IN" and p["rails_mean_w"]["VDD_SOC"] == pytest.approx(3.923)
    assert power_summary([], 1.0, 1)["power_w"] is None

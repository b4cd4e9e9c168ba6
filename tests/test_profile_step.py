"""benchmarks/profile_step.py: trace events summed by what the compiled program's ops do."""

import gzip
import importlib.util
import json
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "profile_step.py")
_spec = importlib.util.spec_from_file_location("profile_step", _PATH)
profile_step = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_step)

# A fragment of XLA:CPU's optimized HLO text, in its format: fused computations first, then the
# entry computation whose instructions the trace's events are named after.
HLO = """\
HloModule jit_step

%fused_computation.1 (param_0.1: f32[4,8,8,16], param_1.1: f32[3,3,16,32]) -> f32[4,8,8,32] {
  %param_0.1 = f32[4,8,8,16]{3,2,1,0} parameter(0)
  %param_1.1 = f32[3,3,16,32]{3,2,1,0} parameter(1)
  ROOT %convolution.1 = f32[4,8,8,32]{3,2,1,0} convolution(%param_0.1, %param_1.1), \
window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
}

%fused_computation.2 (param_0.2: f32[16,8,8,4], param_1.2: f32[8,8,4,32]) -> f32[16,3,3,32] {
  %param_0.2 = f32[16,8,8,4]{3,2,1,0} parameter(0)
  %param_1.2 = f32[8,8,4,32]{3,2,1,0} parameter(1)
  ROOT %convolution.2 = f32[16,3,3,32]{3,2,1,0} convolution(%param_0.2, %param_1.2), \
window={size=8x8 pad=1_1x1_1}, dim_labels=b01f_01io->b01f
}

%fused_computation.3 (param_0.3: f32[4,4,4,32], param_1.3: f32[3,3,32,16]) -> f32[4,8,8,16] {
  %param_0.3 = f32[4,4,4,32]{3,2,1,0} parameter(0)
  %param_1.3 = f32[3,3,32,16]{3,2,1,0} parameter(1)
  ROOT %convolution.3 = f32[4,8,8,16]{3,2,1,0} convolution(%param_0.3, %param_1.3), \
window={size=3x3 pad=1_2x1_2 lhs_dilate=2x2}, dim_labels=b01f_01io->b01f
}

%fused_computation.4 (param_0.4: f32[4,8,8,16]) -> f32[16,8,8,4] {
  %param_0.4 = f32[4,8,8,16]{3,2,1,0} parameter(0)
  ROOT %transpose.4 = f32[16,8,8,4]{3,2,1,0} transpose(%param_0.4), dimensions={3,1,2,0}
}

%fused_computation.5 (param_0.5: f32[4,8,8,16]) -> f32[16] {
  %param_0.5 = f32[4,8,8,16]{3,2,1,0} parameter(0)
  %constant.5 = f32[] constant(0)
  ROOT %reduce.5 = f32[16]{0} reduce(%param_0.5, %constant.5), dimensions={0,1,2}, to_apply=%add
}

%fused_computation.6 (param_0.6: f32[4,8,8,16]) -> f32[4,8,8,16] {
  %param_0.6 = f32[4,8,8,16]{3,2,1,0} parameter(0)
  %constant.6 = f32[] constant(0)
  ROOT %maximum.6 = f32[4,8,8,16]{3,2,1,0} maximum(%param_0.6, %constant.6)
}

ENTRY %main (p0: f32[4,8,8,16], p1: f32[3,3,16,32]) -> f32[16] {
  %p0 = f32[4,8,8,16]{3,2,1,0} parameter(0)
  %p1 = f32[3,3,16,32]{3,2,1,0} parameter(1)
  %ynn_fusion.1 = f32[4,8,8,32]{3,2,1,0} fusion(%p0, %p1), kind=kCustom, calls=%fused_computation.1
  %ynn_fusion.2 = f32[16,3,3,32]{3,2,1,0} fusion(%p0, %p1), kind=kCustom, calls=%fused_computation.2
  %ynn_fusion.3 = f32[4,8,8,16]{3,2,1,0} fusion(%p0, %p1), kind=kCustom, calls=%fused_computation.3
  %transpose_copy_fusion.4 = f32[16,8,8,4]{3,2,1,0} fusion(%p0), kind=kLoop, \
calls=%fused_computation.4
  %reduce_fusion.5 = f32[16]{0} fusion(%p0), kind=kLoop, calls=%fused_computation.5
  %all-reduce.7 = f32[16]{0} all-reduce(%reduce_fusion.5), replica_groups={{0,1}}, to_apply=%add
  %dot.8 = f32[4,32]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  ROOT %maximum_fusion.6 = f32[4,8,8,16]{3,2,1,0} fusion(%p0), kind=kLoop, \
calls=%fused_computation.6
}
"""

EXPECTED = {
    "ynn_fusion.1": "convolutions: forward and input gradients",
    "ynn_fusion.2": "convolutions: weight gradients",
    "ynn_fusion.3": "convolutions: input gradients of strided convolutions",
    "transpose_copy_fusion.4": "layout transposes",
    "reduce_fusion.5": "reductions",
    "all-reduce.7": "cross-device collectives",
    "dot.8": "matrix products",
    "maximum_fusion.6": "elementwise",
}


def test_each_op_is_classified_by_its_root_instruction():
    instructions, computations = profile_step.parse_hlo(HLO)
    for name, kind in EXPECTED.items():
        assert profile_step.kind_of(name, instructions, computations).startswith(kind), name


def test_trace_events_are_summed_per_kind_and_per_step(tmp_path):
    trace = tmp_path / "plugins" / "profile" / "run"
    trace.mkdir(parents=True)
    # Two steps: each op runs twice for 1000 us (1 ms) times its index; runtime events that
    # are not program ops (the executor's own) are left out of the sums.
    events = [{"ph": "X", "name": name, "dur": 1000.0 * (i + 1)}
              for i, name in enumerate(EXPECTED) for _ in range(2)]
    events.append({"ph": "X", "name": "ThunkExecutor::Execute", "dur": 1e6})
    with gzip.open(trace / "perfetto_trace.json.gz", "wt") as f:
        json.dump({"traceEvents": events}, f)
    result = profile_step.summarize(str(tmp_path), HLO, steps=2)
    assert result["op_ms_per_step"] == pytest.approx(sum(range(1, 9)))
    weight = next(k for k in result["kinds"] if k.startswith("convolutions: weight"))
    assert result["kinds"][weight]["ms"] == pytest.approx(2.0)
    assert sum(v["share"] for v in result["kinds"].values()) == pytest.approx(1.0, abs=0.01)
    assert result["top_ops"][0]["op"] == "maximum_fusion.6"
    assert result["top_ops"][0]["shape"] == "f32[4,8,8,16]{3,2,1,0}"


def test_a_missing_trace_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="no perfetto trace"):
        profile_step.summarize(str(tmp_path), HLO, steps=1)

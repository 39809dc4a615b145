package repair_test

import (
	"testing"

	_ "badprune/internal/onnxmodel"
)

// TestRepairONNXAgainstOracle repairs PyTorch exports (opsets 9, 11, 13,
// 17; an old export's Shape/Gather flatten, a Reshape+Gemm head with
// BatchNormalization on the FC features and a conv padded as PyTorch
// does, a fixed batch size, a GAP head behind depthwise, concatenated and
// residual branches) and checks ranking, every step, each B' and the
// evaluation against the plain-loop oracle. (The random-weight exports
// give nearly one class on random images; the layers and scales are those
// at which pruning costs accuracy, so that B' files are saved.)
func TestRepairONNXAgainstOracle(t *testing.T) {
	for _, tc := range []struct {
		name, layer, wantLayer, wantRank string
		scale                            float32
	}{
		{"deepid_tiny", "", "conv_3", "/pool_2/MaxPool", 1},
		{"deepid_tiny_old", "", "conv_3", "8", 1},
		{"reshape_gemm", "", "conv2", "conv2", 1.0 / 128},
		{"reshape_gemm_b1", "/conv1/Conv", "/conv1/Conv", "/conv2/Conv_pad", 1.0 / 16},
		{"gap_head", "a", "a", "a", 1},
	} {
		res := checkRepair(t, "../../testdata/onnx/"+tc.name+".onnx", "", tc.layer, 40, tc.scale, 1)
		if res.Log.Layer != tc.wantLayer || res.Log.RankLayer != tc.wantRank || res.Ext != ".onnx" {
			t.Errorf("%s: pruned %s ranked by %s, B' %s; want %s by %s, .onnx", tc.name, res.Log.Layer, res.Log.RankLayer, res.Ext, tc.wantLayer, tc.wantRank)
		}
	}
}

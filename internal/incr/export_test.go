package incr

// SetSettle turns h's settling of top logits from a bfloat16 first pass
// off (every recount then computes every logit) or back on.
func SetSettle(h *Head, on bool) {
	if !on {
		h.cls.settle = nil
		return
	}
	h.cls.settle = newClassifier(h.cls.l, h.cls.in).settle
}

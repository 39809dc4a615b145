package incr

// DisableSettle turns h's settling of top logits from a bfloat16 first
// pass off: every recount then computes every logit.
func DisableSettle(h *Head) { h.cls.settle = nil }

// Settles reports whether h settles top logits from a bfloat16 first pass
// (the CPU has AVX-512 BF16).
func Settles(h *Head) bool { return h.cls.settle != nil }

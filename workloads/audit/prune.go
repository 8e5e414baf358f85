package audit

import (
	"maps"
	"strconv"
)

// How a trail is pruned. The retention policy keeps audit events for auditRetention (HIPAA:
// six years); older ones are removed, but only up to a signed checkpoint, the anchor, never
// inside the stretch a checkpoint covers. The store records the cut, an audit-pruned event
// with PruneDetail, in the transaction that moves the anchor, then deletes the events up to
// the anchor, oldest first. An export of what remains starts with the anchor (Export), and
// Verify links its first event to the anchor's signed head and requires the event that
// records the cut: events removed from the start of a trail without that record do not
// verify, whichever checkpoint they were cut at.

// The detail keys of an audit-pruned event, besides the rule's own ("rule", "generation").
const (
	PruneAnchor  = "anchor"  // size of the signed checkpoint the trail now starts after
	PruneFrom    = "from"    // the first event removed
	PruneThrough = "through" // the last event removed: the anchor's size
	PruneCount   = "count"   // how many events were removed
)

// PruneDetail returns the detail of the audit-pruned event that records removing events from
// to anchor, the size of the signed checkpoint the trail then starts after, under the rule
// that rule's detail names.
func PruneDetail(rule map[string]string, from, anchor uint64) map[string]string {
	d := maps.Clone(rule)
	if d == nil {
		d = map[string]string{}
	}
	var count uint64
	if from <= anchor {
		count = anchor - from + 1
	}
	d[PruneAnchor] = strconv.FormatUint(anchor, 10)
	d[PruneFrom] = strconv.FormatUint(from, 10)
	d[PruneThrough] = strconv.FormatUint(anchor, 10)
	d[PruneCount] = strconv.FormatUint(count, 10)
	return d
}

// recordsPruneAt reports whether e records a cut of the trail at the checkpoint at size anchor.
func recordsPruneAt(e Event, anchor uint64) bool {
	return e.Kind == KindAuditPruned && e.Detail[PruneAnchor] == strconv.FormatUint(anchor, 10)
}

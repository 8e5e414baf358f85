package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestLeafDue(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	validity := 90 * 24 * time.Hour
	s := &secretStep{now: now, validity: validity}
	meta := func(issuer string, notAfter time.Time) *metav1.PartialObjectMetadata {
		m := &metav1.PartialObjectMetadata{}
		m.Annotations = map[string]string{AnnotationCAVersion: issuer, AnnotationNames: "names1"}
		if !notAfter.IsZero() {
			m.Annotations[AnnotationNotAfter] = notAfter.Format(time.RFC3339)
		}
		return m
	}
	cases := []struct {
		name string
		m    *metav1.PartialObjectMetadata
		due  bool
	}{
		{"missing", nil, true},
		{"fresh", meta("ca1", now.Add(80*24*time.Hour)), false},
		{"just before renewal", meta("ca1", now.Add(30*24*time.Hour+time.Minute)), false},
		{"a third of its life left", meta("ca1", now.Add(30*24*time.Hour)), true},
		{"expired", meta("ca1", now.Add(-time.Hour)), true},
		{"other CA", meta("ca0", now.Add(80*24*time.Hour)), true},
		{"no expiry annotation", meta("ca1", time.Time{}), true},
	}
	renamed := meta("ca1", now.Add(80*24*time.Hour))
	renamed.Annotations[AnnotationNames] = "names0"
	cases = append(cases, struct {
		name string
		m    *metav1.PartialObjectMetadata
		due  bool
	}{"names changed", renamed, true})
	for _, tc := range cases {
		if due, why := s.leafDue(tc.m, "ca1", "names1"); due != tc.due {
			t.Errorf("%s: due = %v (%s), want %v", tc.name, due, why, tc.due)
		}
	}
}

func TestFieldsSubset(t *testing.T) {
	have := map[string]any{
		"metadata": map[string]any{"name": "a", "uid": "x", "labels": map[string]any{"k": "v", "other": "w"}},
		"spec": map[string]any{
			"replicas": int64(2),
			"ports":    []any{map[string]any{"port": int64(443), "protocol": "TCP"}},
			"flag":     false,
		},
	}
	cases := []struct {
		name string
		want map[string]any
		ok   bool
	}{
		{"defaults and other fields do not matter", map[string]any{"metadata": map[string]any{"name": "a",
			"labels": map[string]any{"k": "v"}}, "spec": map[string]any{"ports": []any{map[string]any{"port": int64(443)}}}}, true},
		{"changed value", map[string]any{"spec": map[string]any{"replicas": int64(3)}}, false},
		{"missing label", map[string]any{"metadata": map[string]any{"labels": map[string]any{"gone": "v"}}}, false},
		{"list element removed", map[string]any{"spec": map[string]any{"ports": []any{map[string]any{"port": int64(443)},
			map[string]any{"port": int64(80)}}}}, false},
		{"false is a value, not absence", map[string]any{"spec": map[string]any{"missing": false}}, false},
		{"false kept", map[string]any{"spec": map[string]any{"flag": false}}, true},
		{"null in want means unset", map[string]any{"metadata": map[string]any{"creationTimestamp": nil}}, true},
	}
	for _, tc := range cases {
		if got := fieldsSubset(tc.want, have); got != tc.ok {
			t.Errorf("%s: fieldsSubset = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

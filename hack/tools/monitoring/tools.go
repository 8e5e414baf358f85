//go:build tools

// Module monitoring generates the Prometheus Operator's CRDs (ServiceMonitor, PodMonitor,
// PrometheusRule) from the API types of its Go module with controller-gen, exactly as that
// project generates them, so that the chart's tests can dry-run its monitoring objects against
// a real API server on machines that cannot download the CRDs. A separate module keeps the
// Prometheus Operator's API out of the project's go.mod.
package tools

import (
	_ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
)

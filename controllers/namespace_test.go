package controllers

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	securetextv1alpha1 "github.com/securetext/securetext/api/v1alpha1"
)

func TestNamespaceOwnership(t *testing.T) {
	labels := desiredNamespaceLabels(&securetextv1alpha1.SecureTextTenant{ObjectMeta: metav1.ObjectMeta{Name: "a"}})
	if labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Fatalf("restricted not enforced: %v", labels)
	}
	if !labelsSatisfied(map[string]string{"extra": "x", LabelTenant: "a", LabelManagedBy: ManagedByValue,
		LabelPartOf: PartOfValue, labelPodSecurityEnforce: "restricted", labelPodSecurityEnforceVersion: "latest",
		labelPodSecurityAudit: "restricted", labelPodSecurityWarn: "restricted"}, labels) {
		t.Error("extra labels should not count as drift")
	}
	if labelsSatisfied(map[string]string{LabelTenant: "a"}, labels) {
		t.Error("missing labels must count as drift")
	}
}

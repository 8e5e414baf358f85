// Package v1alpha1 holds the SecureText custom resources: SecureTextTenant and RetentionPolicy
// (cluster-scoped) and LegalHold (namespaced, in a tenant's namespace).
//
// Validation lives in the schema: OpenAPI markers and CEL rules refuse bad input at the API
// server with a message that says what to fix, so the operator never has to.
//
// +kubebuilder:object:generate=true
// +groupName=securetext.io
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every SecureText resource.
	GroupVersion = schema.GroupVersion{Group: "securetext.io", Version: "v1alpha1"}

	// SchemeBuilder adds the SecureText types to a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the SecureText types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

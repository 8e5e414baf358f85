package controllers

// The tenant's workloads: a ServiceAccount, Deployment, PodDisruptionBudget and optional
// HorizontalPodAutoscaler per component, each pod hardened to the restricted Pod Security
// profile.

import (
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// nonRootID is the distroless "nonroot" user and group the images run as.
const nonRootID = int64(65532)

// binSecureText is the workloads' one binary in the workloads image (Dockerfile target
// `workloads`); each component runs it with its own subcommand.
const binSecureText = "/usr/local/bin/securetext"

// defaultResources size a component whose spec names no resources. A memory request is what
// the scheduler reserves: the component's idle working set (measured on kind by the end-to-end
// suite: gateway 9 MiB, viewer 28 MiB, keystore 9-14 MiB) plus its ordinary work; the limit
// covers its peak. The gateway's peak is a few messages of up to 25 MiB being parsed and
// sealed at once. The viewer's is its argon2id slots (19 MiB each, one per CPU, at least two:
// workloads/password), so its request holds two sign-ins at once and its limit a 16-CPU node's.
var defaultResources = map[Component]corev1.ResourceRequirements{
	ComponentGateway: {
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
	},
	ComponentViewer: {
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
	},
	ComponentKeystore: {
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("50m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
	},
}

func (r *renderer) serviceAccount(c Component) *corev1.ServiceAccount {
	// No token is mounted anywhere by default; the keystore projects its own (see deployment).
	return &corev1.ServiceAccount{
		TypeMeta:                     typeServiceAccount,
		ObjectMeta:                   r.meta(objectName(c), c),
		AutomountServiceAccountToken: ptr.To(false),
	}
}

// podSecurityContext and containerSecurityContext satisfy the restricted Pod Security profile.
func podSecurityContext() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		RunAsUser:      ptr.To(nonRootID),
		RunAsGroup:     ptr.To(nonRootID),
		FSGroup:        ptr.To(nonRootID),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func containerSecurityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr.To(true),
		RunAsUser:                ptr.To(nonRootID),
		RunAsGroup:               ptr.To(nonRootID),
		ReadOnlyRootFilesystem:   ptr.To(true),
		AllowPrivilegeEscalation: ptr.To(false),
		Privileged:               ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// containerPorts are the ports component c listens on; the first is the probes' port.
func (r *renderer) containerPorts(c Component) []corev1.ContainerPort {
	tcp := func(name string, port int32) corev1.ContainerPort {
		return corev1.ContainerPort{Name: name, ContainerPort: port, Protocol: corev1.ProtocolTCP}
	}
	switch c {
	case ComponentGateway:
		ports := []corev1.ContainerPort{tcp(portNameHTTPS, portGatewayAPI)}
		if r.smtpEnabled() {
			ports = append(ports, tcp(portNameSMTP, portSMTP))
			if r.spec.SMTP.ImplicitTLSPort != 0 {
				ports = append(ports, tcp(portNameSMTPS, portSMTPS))
			}
		}
		return append(ports, tcp(portNameMetrics, portGatewayMetrics), tcp(portNameStatus, portGatewayStatus))
	case ComponentViewer:
		return []corev1.ContainerPort{tcp(portNameHTTPS, portViewer), tcp(portNameMetrics, portViewerMetrics)}
	}
	return []corev1.ContainerPort{tcp(portNameHTTPS, portKeystore), tcp(portNameMetrics, portKeystoreMetrics)}
}

// probe is an HTTPS GET of path on the component's HTTPS port. Every component serves /healthz
// (the process is up) and /readyz (it can serve: database, keystore or Vault reachable) there,
// without a client certificate.
func httpsProbe(path string, failureThreshold int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: intstr.FromString(portNameHTTPS), Scheme: corev1.URISchemeHTTPS,
		}},
		PeriodSeconds: 10, TimeoutSeconds: 3, FailureThreshold: failureThreshold,
	}
}

func (r *renderer) deployment(c Component, cm *corev1.ConfigMap, cc componentConfig) *appsv1.Deployment {
	labels := r.componentLabels(c)
	container := corev1.Container{
		Name:            string(c),
		Image:           r.in.WorkloadImage,
		ImagePullPolicy: r.in.ImagePullPolicy,
		Command:         []string{binSecureText},
		Args:            []string{string(c)},
		Ports:           r.containerPorts(c),
		EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name},
		}}},
		Env:                      cc.secretEnv,
		Resources:                r.resources(c),
		ReadinessProbe:           httpsProbe("/readyz", 3),
		LivenessProbe:            httpsProbe("/healthz", 6),
		SecurityContext:          containerSecurityContext(),
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if c == ComponentKeystore {
		container.Image = r.in.KeystoreImage
	}

	var volumes []corev1.Volume
	var secretNames []string // and ConfigMaps other than the component's own: what the checksum covers
	for _, m := range cc.mounts {
		v := corev1.Volume{Name: m.volume}
		if m.secret != "" {
			v.Secret = &corev1.SecretVolumeSource{SecretName: m.secret, Items: m.items, DefaultMode: ptr.To(secretFileMode)}
			secretNames = append(secretNames, m.secret)
		} else {
			v.ConfigMap = &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: m.configMap}, Items: m.items, DefaultMode: ptr.To(secretFileMode),
			}
			if !m.refreshed {
				secretNames = append(secretNames, m.configMap)
			}
		}
		volumes = append(volumes, v)
		container.VolumeMounts = append(container.VolumeMounts, corev1.VolumeMount{Name: m.volume, MountPath: m.dir, ReadOnly: true})
	}
	for _, e := range cc.secretEnv {
		secretNames = append(secretNames, e.ValueFrom.SecretKeyRef.Name)
	}
	if c == ComponentKeystore {
		// Vault's Kubernetes auth: a short-lived token for the keystore's own account, projected
		// where the keystore reads it (vaultlogin.DefaultServiceAccountTokenPath) and refreshed by
		// the kubelet. It is the only Kubernetes credential in the tenant's pods.
		volumes = append(volumes, corev1.Volume{Name: "vault-token", VolumeSource: corev1.VolumeSource{
			Projected: &corev1.ProjectedVolumeSource{
				DefaultMode: ptr.To(secretFileMode),
				Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
					Audience: r.in.Vault.TokenAudience, ExpirationSeconds: ptr.To(defaultTokenExpiration), Path: serviceAccountToken,
				}}},
			},
		}})
		container.VolumeMounts = append(container.VolumeMounts, corev1.VolumeMount{Name: "vault-token", MountPath: serviceAccountDir, ReadOnly: true})
	}
	sort.Strings(secretNames)
	secretNames = compactStrings(secretNames)

	podAnnotations := map[string]string{
		AnnotationConfigChecksum: configChecksum(cm.Data, secretNames, r.in.SecretVersions),
	}

	var replicas *int32
	if _, ok := r.in.Autoscaling[c]; !ok {
		replicas = ptr.To(r.replicas(c))
	}
	return &appsv1.Deployment{
		TypeMeta:   typeDeployment,
		ObjectMeta: r.meta(objectName(c), c),
		Spec: appsv1.DeploymentSpec{
			Replicas:             replicas,
			Selector:             &metav1.LabelSelector{MatchLabels: selectorLabels(r.t.Name, c)},
			RevisionHistoryLimit: ptr.To(int32(5)),
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)), MaxSurge: ptr.To(intstr.FromInt32(1)),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: podAnnotations},
				Spec: corev1.PodSpec{
					ServiceAccountName:            objectName(c),
					AutomountServiceAccountToken:  ptr.To(false),
					EnableServiceLinks:            ptr.To(false),
					SecurityContext:               podSecurityContext(),
					Containers:                    []corev1.Container{container},
					Volumes:                       volumes,
					TerminationGracePeriodSeconds: ptr.To(int64(30)),
					TopologySpreadConstraints:     topologySpread(selectorLabels(r.t.Name, c)),
					Affinity:                      zoneAffinity(selectorLabels(r.t.Name, c)),
				},
			},
		},
	}
}

func compactStrings(sorted []string) []string {
	out := sorted[:0]
	for i, s := range sorted {
		if i == 0 || s != sorted[i-1] {
			out = append(out, s)
		}
	}
	return out
}

// topologySpread spreads a component's pods over nodes, preferring but not requiring it, so
// that a small cluster still schedules them. The spread counts the pods of one revision
// (pod-template-hash): otherwise a rolling update counts the old ReplicaSet's pods, still
// running, and places the new ones wherever those are not, often all on one node. Zones are
// left to zoneAffinity: a spread constraint on a key that some nodes lack makes the scheduler
// ignore every constraint of the pod on those nodes, so on a cluster without zone labels (kind,
// most on-premises clusters) a zone constraint would switch off the spread over nodes too.
func topologySpread(selector map[string]string) []corev1.TopologySpreadConstraint {
	return []corev1.TopologySpreadConstraint{{
		MaxSkew: 1, TopologyKey: corev1.LabelHostname, WhenUnsatisfiable: corev1.ScheduleAnyway,
		LabelSelector:  &metav1.LabelSelector{MatchLabels: selector},
		MatchLabelKeys: []string{appsv1.DefaultDeploymentUniqueLabelKey},
	}}
}

// zoneAffinity prefers zones without another pod of the component, where nodes have zones.
func zoneAffinity(selector map[string]string) *corev1.Affinity {
	return &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
			Weight: 50,
			PodAffinityTerm: corev1.PodAffinityTerm{
				LabelSelector: &metav1.LabelSelector{MatchLabels: selector},
				TopologyKey:   corev1.LabelTopologyZone,
			},
		}},
	}}
}

func (r *renderer) resources(c Component) corev1.ResourceRequirements {
	res := r.componentSpec(c).Resources
	if len(res.Requests) == 0 && len(res.Limits) == 0 {
		def := defaultResources[c]
		return *def.DeepCopy()
	}
	return *res.DeepCopy()
}

// podDisruptionBudget keeps one pod of a replicated component up through voluntary
// disruptions; a single replica may be evicted, or node drains would hang on it.
func (r *renderer) podDisruptionBudget(c Component) *policyv1.PodDisruptionBudget {
	spec := policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: selectorLabels(r.t.Name, c)}}
	if r.replicas(c) > 1 {
		spec.MinAvailable = ptr.To(intstr.FromInt32(1))
	} else {
		spec.MaxUnavailable = ptr.To(intstr.FromInt32(1))
	}
	return &policyv1.PodDisruptionBudget{TypeMeta: typePDB, ObjectMeta: r.meta(objectName(c), c), Spec: spec}
}

func (r *renderer) horizontalPodAutoscaler(c Component) *autoscalingv2.HorizontalPodAutoscaler {
	a, ok := r.in.Autoscaling[c]
	if !ok {
		return nil
	}
	minReplicas := r.replicas(c)
	maxReplicas := max(a.MaxReplicas, minReplicas)
	target := a.TargetCPUUtilizationPercentage
	if target <= 0 {
		target = 75
	}
	return &autoscalingv2.HorizontalPodAutoscaler{
		TypeMeta:   typeHPA,
		ObjectMeta: r.meta(objectName(c), c),
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: objectName(c)},
			MinReplicas:    ptr.To(minReplicas),
			MaxReplicas:    maxReplicas,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.ResourceMetricSourceType,
				Resource: &autoscalingv2.ResourceMetricSource{
					Name:   corev1.ResourceCPU,
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To(target)},
				},
			}},
		},
	}
}

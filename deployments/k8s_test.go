package deployments

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/gopcast/gopcast/pkg/queue"
)

// The Kubernetes manifests are checked as the cluster would get them: each overlay rendered by
// kustomize's own library (what `kubectl apply -k` runs), every object decoded strictly into
// its k8s.io/api type (an unknown or misspelt field fails), then checked against the rules a
// gopcast deployment lives by.

const (
	namespace = "gopcast"
	// transcoderConsumer is pkg/queue's durable consumer on the jobs streams (queue.JobsStream).
	transcoderConsumer = "transcoders"
	// secretName is the Secret every overlay provides (dev) or the operator creates (production,
	// documented in k8s/README.md), with these keys.
	secretName = "gopcast-secrets"
)

var secretKeys = []string{"s3-access-key", "s3-secret-key", "api-token"}

// overlay is one kustomization to render and what it must contain.
type overlay struct {
	dir string
	// external names Secrets the operator creates, with the keys they hold.
	external map[string][]string
	// wantKEDA: transcoders scaled by KEDA (true) or by the CPU HorizontalPodAutoscaler (false);
	// autoscaled false: neither (a fixed single transcoder).
	wantKEDA, autoscaled bool
	natsReplicas         int32
	wantMinIO            bool
	wantShards           int
}

var overlays = []overlay{
	{dir: "k8s/base", external: map[string][]string{secretName: secretKeys}, autoscaled: true, natsReplicas: 3, wantShards: 1},
	// The KEDA component on its own, unsharded: its default trigger must fit the base.
	{dir: "base+keda", external: map[string][]string{secretName: secretKeys}, wantKEDA: true, autoscaled: true, natsReplicas: 3, wantShards: 1},
	{dir: "k8s/overlays/dev", autoscaled: false, natsReplicas: 1, wantMinIO: true, wantShards: 1},
	{dir: "k8s/overlays/production", external: map[string][]string{secretName: secretKeys, "gopcast-api-tls": {"tls.crt", "tls.key"}},
		wantKEDA: true, autoscaled: true, natsReplicas: 3, wantShards: 8},
}

// scaledObject is KEDA's ScaledObject (keda.sh/v1alpha1), hand-written from KEDA v2's API types
// for the fields a ScaledObject may have, so that strict decoding refuses anything else.
type scaledObject struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		ScaleTargetRef *struct {
			Name                   string `json:"name"`
			APIVersion             string `json:"apiVersion,omitempty"`
			Kind                   string `json:"kind,omitempty"`
			EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
		} `json:"scaleTargetRef"`
		PollingInterval       *int32 `json:"pollingInterval,omitempty"`
		InitialCooldownPeriod *int32 `json:"initialCooldownPeriod,omitempty"`
		CooldownPeriod        *int32 `json:"cooldownPeriod,omitempty"`
		IdleReplicaCount      *int32 `json:"idleReplicaCount,omitempty"`
		MinReplicaCount       *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount       *int32 `json:"maxReplicaCount,omitempty"`
		Advanced              *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
				Name     string                                         `json:"name,omitempty"`
			} `json:"horizontalPodAutoscalerConfig,omitempty"`
			RestoreToOriginalReplicaCount bool `json:"restoreToOriginalReplicaCount,omitempty"`
			ScalingModifiers              *struct {
				Formula          string                         `json:"formula,omitempty"`
				Target           string                         `json:"target,omitempty"`
				ActivationTarget string                         `json:"activationTarget,omitempty"`
				MetricType       autoscalingv2.MetricTargetType `json:"metricType,omitempty"`
			} `json:"scalingModifiers,omitempty"`
		} `json:"advanced,omitempty"`
		Triggers []struct {
			Type              string                         `json:"type"`
			Name              string                         `json:"name,omitempty"`
			UseCachedMetrics  bool                           `json:"useCachedMetrics,omitempty"`
			MetricType        autoscalingv2.MetricTargetType `json:"metricType,omitempty"`
			Metadata          map[string]string              `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
				Kind string `json:"kind,omitempty"`
			} `json:"authenticationRef,omitempty"`
		} `json:"triggers"`
		Fallback *struct {
			FailureThreshold int32  `json:"failureThreshold"`
			Replicas         int32  `json:"replicas"`
			Behavior         string `json:"behavior,omitempty"`
		} `json:"fallback,omitempty"`
	} `json:"spec"`
}

// natsJetStreamMetadata are the keys KEDA's nats-jetstream scaler reads.
var natsJetStreamMetadata = []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer",
	"lagThreshold", "activationLagThreshold", "useHttps"}

// rendered is one overlay's objects, by kind and name.
type rendered struct {
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	jobs         map[string]*batchv1.Job
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	pdbs         map[string]*policyv1.PodDisruptionBudget
	hpas         map[string]*autoscalingv2.HorizontalPodAutoscaler
	ingresses    map[string]*networkingv1.Ingress
	scaled       map[string]*scaledObject
	namespaces   map[string]*corev1.Namespace
	accounts     map[string]*corev1.ServiceAccount
}

var codec = func() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme,
		policyv1.AddToScheme, networkingv1.AddToScheme, autoscalingv2.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
}()

func render(t *testing.T, dir string) *rendered {
	t.Helper()
	if dir == "base+keda" {
		dir = t.TempDir()
		rel := func(p string) string {
			r, err := filepath.Rel(dir, mustAbs(t, p)) // kustomize wants relative paths
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: " + namespace + "\n" +
			"resources: [" + rel("k8s/base") + "]\ncomponents: [" + rel("k8s/components/keda") + "]\n"
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	r := &rendered{deployments: map[string]*appsv1.Deployment{}, statefulSets: map[string]*appsv1.StatefulSet{},
		jobs: map[string]*batchv1.Job{}, services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{}, ingresses: map[string]*networkingv1.Ingress{},
		scaled: map[string]*scaledObject{}, namespaces: map[string]*corev1.Namespace{}, accounts: map[string]*corev1.ServiceAccount{}}
	for _, res := range m.Resources() {
		id := res.CurId().String()
		y, err := res.AsYAML()
		if err != nil {
			t.Fatalf("%s: %s: %v", dir, id, err)
		}
		name := res.GetName()
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			t.Errorf("%s: %s: bad name: %v", dir, id, errs)
		}
		if ns := res.GetNamespace(); res.GetKind() != "Namespace" && ns != namespace {
			t.Errorf("%s: %s: namespace %q, want %q", dir, id, ns, namespace)
		}
		if res.GetKind() == "ScaledObject" {
			if res.GetApiVersion() != "keda.sh/v1alpha1" {
				t.Errorf("%s: %s: apiVersion %s, want keda.sh/v1alpha1", dir, id, res.GetApiVersion())
			}
			j, err := res.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			so := &scaledObject{}
			strictErrs, err := sigsjson.UnmarshalStrict(j, so, sigsjson.DisallowUnknownFields)
			if err != nil || len(strictErrs) > 0 {
				t.Errorf("%s: %s: not a KEDA ScaledObject: %v %v", dir, id, err, strictErrs)
			}
			r.scaled[name] = so
			continue
		}
		obj, _, err := codec.Decode(y, nil, nil)
		if err != nil {
			t.Errorf("%s: %s: %v", dir, id, err)
			continue
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			r.deployments[name] = o
		case *appsv1.StatefulSet:
			r.statefulSets[name] = o
		case *batchv1.Job:
			r.jobs[name] = o
		case *corev1.Service:
			r.services[name] = o
		case *corev1.ConfigMap:
			r.configMaps[name] = o
		case *corev1.Secret:
			r.secrets[name] = o
		case *policyv1.PodDisruptionBudget:
			r.pdbs[name] = o
		case *autoscalingv2.HorizontalPodAutoscaler:
			r.hpas[name] = o
		case *networkingv1.Ingress:
			r.ingresses[name] = o
		case *corev1.Namespace:
			r.namespaces[name] = o
		case *corev1.ServiceAccount:
			r.accounts[name] = o
		default:
			t.Errorf("%s: %s: a kind these tests do not check; add it", dir, id)
		}
	}
	return r
}

// workload is a pod template with where it comes from.
type workload struct {
	kind, name string
	tmpl       *corev1.PodTemplateSpec
	selector   *metav1.LabelSelector
}

func (r *rendered) workloads() []workload {
	var out []workload
	for _, n := range sorted(r.deployments) {
		d := r.deployments[n]
		out = append(out, workload{"Deployment", n, &d.Spec.Template, d.Spec.Selector})
	}
	for _, n := range sorted(r.statefulSets) {
		s := r.statefulSets[n]
		out = append(out, workload{"StatefulSet", n, &s.Spec.Template, s.Spec.Selector})
	}
	for _, n := range sorted(r.jobs) {
		j := r.jobs[n]
		out = append(out, workload{"Job", n, &j.Spec.Template, nil})
	}
	return out
}

// gopcastRole is the role a workload runs, "" when it is not gopcast.
func gopcastRole(w workload) (string, *corev1.Container) {
	for i := range w.tmpl.Spec.Containers {
		c := &w.tmpl.Spec.Containers[i]
		if repo, _, _ := strings.Cut(c.Image, ":"); strings.HasSuffix(repo, "/gopcast") || repo == "gopcast" {
			if len(c.Args) > 0 {
				return c.Args[0], c
			}
			return "", c
		}
	}
	return "", nil
}

func TestKustomizeOverlays(t *testing.T) {
	for _, ov := range overlays {
		t.Run(strings.ReplaceAll(ov.dir, "/", "_"), func(t *testing.T) {
			r := render(t, ov.dir)
			checkWorkloads(t, ov, r)
			checkServices(t, r)
			checkReferences(t, ov, r)
			cfg := checkGopcastConfig(t, ov, r)
			checkAutoscaling(t, ov, r, cfg)
			checkNATS(t, ov, r, cfg)
			if ov.wantMinIO {
				checkMinIO(t, r, cfg)
			} else if _, ok := r.deployments["minio"]; ok {
				t.Errorf("MinIO is for the dev overlay only")
			}
		})
	}
}

func checkWorkloads(t *testing.T, ov overlay, r *rendered) {
	roles := map[string]string{}
	for _, w := range r.workloads() {
		where := w.kind + "/" + w.name
		pod := &w.tmpl.Spec
		if w.selector != nil {
			sel, err := metav1.LabelSelectorAsSelector(w.selector)
			if err != nil || sel.Empty() || !sel.Matches(labels.Set(w.tmpl.Labels)) {
				t.Errorf("%s: selector %v does not select its own pods (%v)", where, w.selector, w.tmpl.Labels)
			}
		}
		checkRestricted(t, where, pod)
		for _, c := range pod.Containers {
			cw := where + " container " + c.Name
			if c.Image == "" || !strings.Contains(c.Image, ":") {
				t.Errorf("%s: image %q has no tag", cw, c.Image)
			}
			checkResources(t, cw, c.Resources)
			if w.kind != "Job" {
				if c.ReadinessProbe == nil || c.LivenessProbe == nil {
					t.Errorf("%s: needs readiness and liveness probes", cw)
				}
				for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
					if p != nil && p.HTTPGet != nil && !hasPort(c, p.HTTPGet.Port) {
						t.Errorf("%s: probe port %s is not a container port", cw, p.HTTPGet.Port.String())
					}
				}
			}
		}
		_, c := gopcastRole(w)
		if w.kind == "StatefulSet" && !hasPDB(r, w.tmpl.Labels) {
			t.Errorf("%s: no PodDisruptionBudget selects its pods", where)
		}
		if c == nil {
			continue
		}
		if !hasPDB(r, w.tmpl.Labels) {
			t.Errorf("%s: no PodDisruptionBudget selects its pods", where)
		}
		role := checkRole(t, where, c.Args)
		if prev, dup := roles[role]; dup {
			t.Errorf("role %s runs in both %s and %s", role, prev, w.name)
		}
		roles[role] = w.name
		if w.kind != "Deployment" {
			t.Errorf("%s: gopcast roles are stateless Deployments", where)
		}
		if pod.ServiceAccountName == "" || pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Errorf("%s: gopcast needs no Kubernetes API token: its own ServiceAccount, automount off", where)
		} else if _, ok := r.accounts[pod.ServiceAccountName]; !ok {
			t.Errorf("%s: ServiceAccount %s is not in the overlay", where, pod.ServiceAccountName)
		}
		if !probePath(c.ReadinessProbe, "/readyz", "http") || !probePath(c.LivenessProbe, "/healthz", "http") {
			t.Errorf("%s: readiness must be GET /readyz and liveness GET /healthz on port http", where)
		}
		if p, ok := containerPort(c, "http"); !ok || p != 8080 {
			t.Errorf("%s: port http is %d, gopcast's --http-addr default is :8080", where, p)
		}
		grace := int64(30)
		if pod.TerminationGracePeriodSeconds != nil {
			grace = *pod.TerminationGracePeriodSeconds
		}
		if (role == "ingest" || role == "transcoder" || role == "packager") && grace < 60 {
			t.Errorf("%s: terminationGracePeriodSeconds %d, want at least 60 to finish the chunks in flight", where, grace)
		}
		if role == "transcoder" && grace <= 120 {
			t.Errorf("%s: terminationGracePeriodSeconds %d, want more than 2 min: a stopping transcoder finishes each session's chunk in hand (its encode bounded by a 1 min chunk timeout) before handing the session back", where, grace)
		}
		if role == "ingest" {
			if p, ok := containerPort(c, "rtmp"); !ok || p != 1935 {
				t.Errorf("%s: no rtmp container port 1935", where)
			}
		}
		if c.Resources.Limits.Memory().IsZero() {
			continue
		}
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == "GOMEMLIMIT" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil &&
				e.ValueFrom.ResourceFieldRef.Resource == "limits.memory"
		}) {
			t.Errorf("%s: GOMEMLIMIT should follow limits.memory, so the Go heap stays under the limit", where)
		}
	}
	for _, role := range deployedRoles {
		if roles[role] == "" {
			t.Errorf("no Deployment runs gopcast %s", role)
		}
	}
}

// checkRestricted holds every pod to the namespace's Pod Security "restricted" level.
func checkRestricted(t *testing.T, where string, pod *corev1.PodSpec) {
	psc := pod.SecurityContext
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Errorf("%s: uses host namespaces", where)
	}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			t.Errorf("%s: hostPath volume %s", where, v.Name)
		}
	}
	podNonRoot := psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
	podSeccomp := psc != nil && psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
	for _, c := range slices.Concat(pod.InitContainers, pod.Containers) {
		sc := c.SecurityContext
		cw := where + " container " + c.Name
		if sc == nil {
			t.Errorf("%s: no securityContext", cw)
			continue
		}
		if !podNonRoot && (sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot) {
			t.Errorf("%s: not runAsNonRoot", cw)
		}
		if !podSeccomp && (sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
			t.Errorf("%s: no RuntimeDefault seccomp profile", cw)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("%s: allowPrivilegeEscalation must be false", cw)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: must drop ALL capabilities and add none", cw)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("%s: root filesystem should be read-only (writable dirs are emptyDirs)", cw)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("%s: privileged", cw)
		}
	}
}

func checkResources(t *testing.T, where string, res corev1.ResourceRequirements) {
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := res.Requests[name]
		lim, okLim := res.Limits[name]
		switch {
		case !okReq || !okLim:
			t.Errorf("%s: needs %s requests and limits (got requests %v, limits %v)", where, name, res.Requests, res.Limits)
		case req.Sign() <= 0:
			t.Errorf("%s: %s request %s", where, name, req.String())
		case lim.Cmp(req) < 0:
			t.Errorf("%s: %s limit %s below request %s", where, name, lim.String(), req.String())
		}
	}
}

func probePath(p *corev1.Probe, path, port string) bool {
	return p != nil && p.HTTPGet != nil && p.HTTPGet.Path == path && p.HTTPGet.Port == intstr.FromString(port)
}

func hasPort(c corev1.Container, p intstr.IntOrString) bool {
	if p.Type == intstr.String {
		_, ok := containerPort(&c, p.StrVal)
		return ok
	}
	return slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.ContainerPort == p.IntVal })
}

func containerPort(c *corev1.Container, name string) (int32, bool) {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

func hasPDB(r *rendered, podLabels map[string]string) bool {
	for _, p := range r.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err == nil && !sel.Empty() && sel.Matches(labels.Set(podLabels)) {
			return p.Spec.MaxUnavailable != nil || p.Spec.MinAvailable != nil
		}
	}
	return false
}

// podsOf returns the workloads a Service selects.
func (r *rendered) podsOf(s *corev1.Service) []workload {
	var out []workload
	if len(s.Spec.Selector) == 0 {
		return nil
	}
	sel := labels.SelectorFromSet(s.Spec.Selector)
	for _, w := range r.workloads() {
		if w.kind != "Job" && sel.Matches(labels.Set(w.tmpl.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func checkServices(t *testing.T, r *rendered) {
	for name, s := range r.services {
		pods := r.podsOf(s)
		if len(pods) == 0 {
			t.Errorf("Service %s selects no pods", name)
			continue
		}
		for _, p := range s.Spec.Ports {
			for _, w := range pods {
				if !slices.ContainsFunc(w.tmpl.Spec.Containers, func(c corev1.Container) bool { return hasPort(c, p.TargetPort) }) {
					t.Errorf("Service %s port %s: target %s is not a port of %s/%s", name, p.Name, p.TargetPort.String(), w.kind, w.name)
				}
			}
		}
	}
	// RTMP: a TCP load balancer on 1935 in front of the ingest pods, keeping the client address.
	var lb []string
	for name, s := range r.services {
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		lb = append(lb, name)
		if s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			t.Errorf("Service %s: externalTrafficPolicy %q, want Local", name, s.Spec.ExternalTrafficPolicy)
		}
		if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].Port != 1935 || s.Spec.Ports[0].Protocol != corev1.ProtocolTCP {
			t.Errorf("Service %s: want exactly TCP 1935, got %+v", name, s.Spec.Ports)
		}
		for _, w := range r.podsOf(s) {
			if role, _ := gopcastRole(w); role != "ingest" {
				t.Errorf("Service %s: the load balancer reaches %s/%s, not only ingest", name, w.kind, w.name)
			}
		}
	}
	if len(lb) != 1 {
		t.Errorf("want one LoadBalancer Service (RTMP ingest), got %v", lb)
	}
	// The API behind an Ingress, and only the API's /v1 paths.
	apiIngress := false
	for name, ing := range r.ingresses {
		for _, rule := range ing.Spec.Rules {
			if rule.HTTP == nil {
				t.Errorf("Ingress %s: rule without http paths", name)
				continue
			}
			for _, p := range rule.HTTP.Paths {
				svc, ok := r.services[p.Backend.Service.Name]
				if !ok {
					t.Errorf("Ingress %s: backend Service %s is not in the overlay", name, p.Backend.Service.Name)
					continue
				}
				if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool {
					return sp.Name == p.Backend.Service.Port.Name && sp.Name != "" || sp.Port == p.Backend.Service.Port.Number && sp.Port != 0
				}) {
					t.Errorf("Ingress %s: Service %s has no port %+v", name, svc.Name, p.Backend.Service.Port)
				}
				if !strings.HasPrefix(p.Path, "/v1") {
					t.Errorf("Ingress %s: path %s exposes more than the API (/healthz and /metrics stay inside)", name, p.Path)
				}
				for _, w := range r.podsOf(svc) {
					if role, _ := gopcastRole(w); role == "api" {
						apiIngress = true
					}
				}
			}
		}
	}
	if !apiIngress {
		t.Errorf("no Ingress reaches the api pods")
	}
}

// checkReferences: every ConfigMap and Secret a pod uses is in the overlay (or, for Secrets, is
// one the operator is documented to create), with the keys asked for.
func checkReferences(t *testing.T, ov overlay, r *rendered) {
	secretHas := func(where, name, key string) {
		if s, ok := r.secrets[name]; ok {
			if _, ok := s.Data[key]; !ok && s.StringData[key] == "" {
				t.Errorf("%s: Secret %s has no key %s", where, name, key)
			}
			return
		}
		keys, ok := ov.external[name]
		switch {
		case !ok:
			t.Errorf("%s: Secret %s is neither in the overlay nor documented as created by the operator", where, name)
		case key != "" && !slices.Contains(keys, key):
			t.Errorf("%s: key %s of the operator's Secret %s is not documented (%v)", where, key, name, keys)
		}
	}
	configHas := func(where, name, key string) {
		cm, ok := r.configMaps[name]
		if !ok {
			t.Errorf("%s: ConfigMap %s is not in the overlay", where, name)
			return
		}
		if _, ok := cm.Data[key]; key != "" && !ok {
			t.Errorf("%s: ConfigMap %s has no key %s", where, name, key)
		}
	}
	for _, w := range r.workloads() {
		where := w.kind + "/" + w.name
		for _, c := range w.tmpl.Spec.Containers {
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef != nil {
					configHas(where, ef.ConfigMapRef.Name, "")
				}
				if ef.SecretRef != nil {
					secretHas(where, ef.SecretRef.Name, "")
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if ref := e.ValueFrom.SecretKeyRef; ref != nil {
					secretHas(where, ref.Name, ref.Key)
				}
				if ref := e.ValueFrom.ConfigMapKeyRef; ref != nil {
					configHas(where, ref.Name, ref.Key)
				}
			}
		}
		for _, v := range w.tmpl.Spec.Volumes {
			if v.ConfigMap != nil {
				configHas(where, v.ConfigMap.Name, "")
			}
			if v.Secret != nil {
				secretHas(where, v.Secret.SecretName, "")
			}
			if v.EmptyDir != nil && v.EmptyDir.SizeLimit == nil {
				t.Errorf("%s: emptyDir %s has no sizeLimit", where, v.Name)
			}
		}
	}
	for name, ing := range r.ingresses {
		for _, tls := range ing.Spec.TLS {
			secretHas("Ingress/"+name, tls.SecretName, "tls.crt")
		}
	}
}

// envOf is a container's environment as the kubelet would build it, with Secret values from the
// overlay or a placeholder for the operator's Secrets, and Downward API values left empty.
func envOf(r *rendered, c *corev1.Container) map[string]string {
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef != nil {
			for k, v := range r.configMaps[ef.ConfigMapRef.Name].Data {
				env[ef.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			if cm, ok := r.configMaps[e.ValueFrom.ConfigMapKeyRef.Name]; ok {
				env[e.Name] = cm.Data[e.ValueFrom.ConfigMapKeyRef.Key]
			}
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "operator-provided-" + e.ValueFrom.SecretKeyRef.Key
			if s, ok := r.secrets[e.ValueFrom.SecretKeyRef.Name]; ok {
				env[e.Name] = string(s.Data[e.ValueFrom.SecretKeyRef.Key])
			}
		default:
			env[e.Name] = ""
		}
	}
	return env
}

// gopcastConfig is what the overlay configures, as the tests need it.
type gopcastConfig struct {
	shards      int
	concurrency int
	natsURL     *url.URL
	s3Endpoint  *url.URL
	bucket      string
}

func checkGopcastConfig(t *testing.T, ov overlay, r *rendered) gopcastConfig {
	var cfg gopcastConfig
	envs := map[string]map[string]string{}
	for _, w := range r.workloads() {
		role, c := gopcastRole(w)
		if c == nil {
			continue
		}
		env := envOf(r, c)
		envs[role] = env
		checkEnv(t, w.kind+"/"+w.name, role, env)
		shards := 1
		if s := env["GOPCAST_JETSTREAM_SHARDS"]; s != "" {
			shards, _ = strconv.Atoi(s)
		}
		if cfg.shards != 0 && shards != cfg.shards {
			t.Errorf("%s/%s: %d JetStream shards, other roles %d: every process must use the same number", w.kind, w.name, shards, cfg.shards)
		}
		cfg.shards = shards
		if role == "transcoder" {
			cfg.concurrency, _ = strconv.Atoi(env["GOPCAST_TRANSCODER_CONCURRENCY"])
			if cpu := c.Resources.Limits.Cpu(); cfg.concurrency < 1 || resource.NewQuantity(int64(cfg.concurrency), resource.DecimalSI).Cmp(*cpu) > 0 {
				t.Errorf("transcoder: GOPCAST_TRANSCODER_CONCURRENCY %q must be set, from 1 to the CPU limit %s",
					env["GOPCAST_TRANSCODER_CONCURRENCY"], cpu.String())
			}
		}
		if role == "packager" {
			cfg.s3Endpoint, _ = url.Parse(env["GOPCAST_S3_ENDPOINT"])
			cfg.bucket = env["GOPCAST_S3_BUCKET"]
		}
		if u, err := url.Parse(env["GOPCAST_NATS_URL"]); err == nil {
			cfg.natsURL = u
		}
		if env["GOPCAST_LOG_FORMAT"] != "json" {
			t.Errorf("%s/%s: logs should be JSON in a cluster (GOPCAST_LOG_FORMAT)", w.kind, w.name)
		}
	}
	if cfg.shards != ov.wantShards {
		t.Errorf("JetStream shards %d, want %d", cfg.shards, ov.wantShards)
	}
	checkAgreement(t, ov.dir, envs)
	return cfg
}

func checkAutoscaling(t *testing.T, ov overlay, r *rendered, cfg gopcastConfig) {
	targets := map[string]int{}
	for name, h := range r.hpas {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || r.deployments[ref.Name] == nil {
			t.Errorf("HorizontalPodAutoscaler %s targets %s %s, not a Deployment of the overlay", name, ref.Kind, ref.Name)
			continue
		}
		targets[ref.Name]++
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
			t.Errorf("HorizontalPodAutoscaler %s: want at least 2 replicas, max above min", name)
		}
		for _, m := range h.Spec.Metrics {
			if m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU {
				if d := r.deployments[ref.Name]; d.Spec.Template.Spec.Containers[0].Resources.Requests.Cpu().IsZero() {
					t.Errorf("HorizontalPodAutoscaler %s: CPU utilization needs CPU requests", name)
				}
			}
		}
	}
	for name, so := range r.scaled {
		ref := so.Spec.ScaleTargetRef
		if ref == nil || r.deployments[ref.Name] == nil || (ref.Kind != "" && ref.Kind != "Deployment") {
			t.Errorf("ScaledObject %s does not target a Deployment of the overlay", name)
			continue
		}
		targets[ref.Name]++
		checkScaledObject(t, name, so, r, cfg)
	}
	for name, n := range targets {
		if n > 1 {
			t.Errorf("Deployment %s has %d autoscalers; KEDA and an HPA must not both own it", name, n)
		}
		if r.deployments[name].Spec.Replicas != nil {
			t.Errorf("Deployment %s is autoscaled but sets spec.replicas, which every apply would reset", name)
		}
	}
	tr := ""
	for _, w := range r.workloads() {
		if role, _ := gopcastRole(w); role == "transcoder" {
			tr = w.name
		}
	}
	kedaOn := false
	for _, so := range r.scaled {
		kedaOn = kedaOn || so.Spec.ScaleTargetRef != nil && so.Spec.ScaleTargetRef.Name == tr
	}
	switch {
	case ov.wantKEDA && !kedaOn:
		t.Errorf("transcoders are not scaled by KEDA")
	case !ov.wantKEDA && kedaOn:
		t.Errorf("KEDA is on, but this overlay should not need its CRDs")
	case ov.autoscaled && targets[tr] == 0:
		t.Errorf("transcoders are not autoscaled")
	case !ov.autoscaled && targets[tr] != 0:
		t.Errorf("transcoders are autoscaled in an overlay meant to run one")
	}
}

var formulaTermRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func checkScaledObject(t *testing.T, name string, so *scaledObject, r *rendered, cfg gopcastConfig) {
	where := "ScaledObject " + name
	if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 2 {
		t.Errorf("%s: minReplicaCount must be at least 2: live chunks cannot wait for a cold start", where)
	}
	if so.Spec.MaxReplicaCount == nil || *so.Spec.MaxReplicaCount < *so.Spec.MinReplicaCount {
		t.Errorf("%s: maxReplicaCount below minReplicaCount", where)
	}
	// One nats-jetstream trigger per shard of the jobs stream, on the transcoders' consumer: its
	// lag (pending + unacknowledged) is sessions waiting for a worker or being encoded, since a
	// worker holds a session's job while the session lasts. The chunk streams hold bytes and no
	// durable consumer, so KEDA would read their last sequence number instead.
	wantStreams := map[string]bool{}
	for k := range cfg.shards {
		wantStreams[queue.ShardStream(queue.JobsStream, k, cfg.shards)] = true
	}
	var names []string
	for i, tr := range so.Spec.Triggers {
		tw := fmt.Sprintf("%s trigger %d", where, i)
		if tr.Type != "nats-jetstream" {
			t.Errorf("%s: type %q, want nats-jetstream", tw, tr.Type)
			continue
		}
		for k := range tr.Metadata {
			if !slices.Contains(natsJetStreamMetadata, k) {
				t.Errorf("%s: metadata %q is not one the nats-jetstream scaler reads (%v)", tw, k, natsJetStreamMetadata)
			}
		}
		md := tr.Metadata
		if !wantStreams[md["stream"]] {
			t.Errorf("%s: stream %q is not a jobs stream for %d shard(s) (%v)", tw, md["stream"], cfg.shards, sorted(wantStreams))
		}
		delete(wantStreams, md["stream"])
		if md["consumer"] != transcoderConsumer {
			t.Errorf("%s: consumer %q, want %q", tw, md["consumer"], transcoderConsumer)
		}
		if md["account"] != "$G" {
			t.Errorf("%s: account %q, want $G (NATS without accounts)", tw, md["account"])
		}
		if lt, err := strconv.Atoi(md["lagThreshold"]); err != nil || lt != cfg.concurrency {
			t.Errorf("%s: lagThreshold %q, want the transcoder's concurrency %d (sessions one pod encodes)", tw, md["lagThreshold"], cfg.concurrency)
		}
		// KEDA runs in its own namespace and asks the consumer leader by server name, one DNS
		// label under this host: the headless Service of the NATS StatefulSet, fully qualified.
		host, port, _ := strings.Cut(md["natsServerMonitoringEndpoint"], ":")
		svc, ns, ok := strings.Cut(strings.TrimSuffix(host, ".svc.cluster.local"), ".")
		if !ok || ns != namespace || !strings.HasSuffix(host, ".svc.cluster.local") {
			t.Errorf("%s: natsServerMonitoringEndpoint %q is not SERVICE.%s.svc.cluster.local:PORT", tw, host, namespace)
		} else if s, ok := r.services[svc]; !ok || s.Spec.ClusterIP != corev1.ClusterIPNone ||
			!slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port }) {
			t.Errorf("%s: %s is not a headless Service with port %s", tw, svc, port)
		} else if !slices.ContainsFunc(sortedValues(r.statefulSets), func(ss *appsv1.StatefulSet) bool { return ss.Spec.ServiceName == svc }) {
			t.Errorf("%s: %s is not the governing Service of the NATS StatefulSet", tw, svc)
		}
		names = append(names, tr.Name)
	}
	if len(wantStreams) > 0 {
		t.Errorf("%s: no trigger for %v", where, sorted(wantStreams))
	}
	if len(so.Spec.Triggers) <= 1 {
		return
	}
	// Several shards: KEDA would take the largest single shard's demand; the formula adds them.
	var sm = struct{ formula, target string }{}
	if so.Spec.Advanced != nil && so.Spec.Advanced.ScalingModifiers != nil {
		sm.formula, sm.target = so.Spec.Advanced.ScalingModifiers.Formula, so.Spec.Advanced.ScalingModifiers.Target
	}
	var terms []string
	for _, f := range strings.Split(sm.formula, "+") {
		terms = append(terms, strings.TrimSpace(f))
	}
	slices.Sort(terms)
	slices.Sort(names)
	if !slices.Equal(terms, names) || slices.ContainsFunc(terms, func(s string) bool { return !formulaTermRe.MatchString(s) }) {
		t.Errorf("%s: scalingModifiers formula %q must add up every trigger (%v)", where, sm.formula, names)
	}
	if tg, err := strconv.Atoi(sm.target); err != nil || tg != cfg.concurrency {
		t.Errorf("%s: scalingModifiers target %q, want the transcoder's concurrency %d", where, sm.target, cfg.concurrency)
	}
}

// generated finds a Secret by the name a generator gave it, before kustomize appended the
// content hash (references to it are rewritten to the hashed name).
func (r *rendered) generated(name string) (*corev1.Secret, bool) {
	for n, s := range r.secrets {
		if n == name || strings.HasPrefix(n, name+"-") && len(n) == len(name)+11 {
			return s, true
		}
	}
	return nil, false
}

func sortedValues[V any](m map[string]V) []V {
	var out []V
	for _, k := range sorted(m) {
		out = append(out, m[k])
	}
	return out
}

// checkNATS: the StatefulSet, its config as nats-server itself parses it, and the Services
// gopcast and the cluster routes use.
func checkNATS(t *testing.T, ov overlay, r *rendered, cfg gopcastConfig) {
	ss, ok := r.statefulSets["nats"]
	if !ok {
		t.Fatal("no nats StatefulSet")
	}
	if ss.Spec.Replicas == nil || *ss.Spec.Replicas != ov.natsReplicas {
		t.Errorf("nats: %v replicas, want %d", ss.Spec.Replicas, ov.natsReplicas)
	}
	c := ss.Spec.Template.Spec.Containers[0]
	if !strings.HasPrefix(c.Image, "nats:2.") {
		t.Errorf("nats: image %q, want the official nats:2.x", c.Image)
	}
	confPath := argAfter(c.Args, "--config", "-c")
	var conf string
	for _, v := range ss.Spec.Template.Spec.Volumes {
		for _, m := range c.VolumeMounts {
			if m.Name == v.Name && v.ConfigMap != nil && strings.HasPrefix(confPath, m.MountPath+"/") {
				conf = r.configMaps[v.ConfigMap.Name].Data[strings.TrimPrefix(confPath, m.MountPath+"/")]
			}
		}
	}
	if conf == "" {
		t.Fatalf("nats: the config file %s is not mounted from a ConfigMap", confPath)
	}
	f := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(f, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SERVER_NAME", ss.Name+"-0")
	opts, err := server.ProcessConfigFile(f)
	if err != nil {
		t.Fatalf("nats: nats-server refuses the config: %v", err)
	}
	if opts.ServerName != ss.Name+"-0" {
		t.Errorf("nats: server_name %q, want the pod name (KEDA finds the consumer leader by it)", opts.ServerName)
	}
	if !opts.JetStream {
		t.Errorf("nats: JetStream is off")
	}
	if opts.MaxPayload != queue.MaxPayload {
		t.Errorf("nats: max_payload %d, want %d as gopcast's embedded server (queue.MaxPayload)", opts.MaxPayload, queue.MaxPayload)
	}
	mounted := func(dir string) bool {
		return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == dir })
	}
	if !mounted(opts.StoreDir) {
		t.Errorf("nats: store_dir %s is not a mounted volume", opts.StoreDir)
	}
	if pid := filepath.Dir(opts.PidFile); opts.PidFile != "" && !mounted(pid) {
		t.Errorf("nats: pid_file %s is not on a writable volume (read-only root)", opts.PidFile)
	}
	var pvc *resource.Quantity
	for _, vct := range ss.Spec.VolumeClaimTemplates {
		if mounted(mountOf(c, vct.Name)) && mountOf(c, vct.Name) == opts.StoreDir {
			q := vct.Spec.Resources.Requests[corev1.ResourceStorage]
			pvc = &q
		}
	}
	if pvc == nil {
		t.Errorf("nats: store_dir is not on a persistent volume claim")
	} else if opts.JetStreamMaxStore <= 0 || opts.JetStreamMaxStore >= pvc.Value() {
		t.Errorf("nats: max_file_store %d must be set and below the volume's %s", opts.JetStreamMaxStore, pvc.String())
	}
	if p, ok := containerPort(&c, "monitor"); !ok || int(p) != opts.HTTPPort {
		t.Errorf("nats: monitor port %d, config http_port %d", p, opts.HTTPPort)
	}
	// Routes: one per pod, by its stable name under the governing headless Service.
	if *ss.Spec.Replicas > 1 {
		var want, got []string
		for i := range *ss.Spec.Replicas {
			want = append(want, fmt.Sprintf("%s-%d.%s:6222", ss.Name, i, ss.Spec.ServiceName))
		}
		for _, u := range opts.Routes {
			got = append(got, u.Host)
		}
		if !slices.Equal(got, want) {
			t.Errorf("nats: cluster routes %v, want %v", got, want)
		}
		if !opts.Cluster.NoAdvertise {
			t.Errorf("nats: cluster no_advertise should be on (clients use the Service; KEDA finds nodes by name)")
		}
		if ss.Spec.Template.Spec.Affinity == nil || ss.Spec.Template.Spec.Affinity.PodAntiAffinity == nil {
			t.Errorf("nats: nodes of one cluster must not share a machine (podAntiAffinity)")
		}
	} else if len(opts.Routes) > 0 {
		t.Errorf("nats: one node with cluster routes %v would wait for peers", opts.Routes)
	}
	if hs, ok := r.services[ss.Spec.ServiceName]; !ok || hs.Spec.ClusterIP != corev1.ClusterIPNone || !hs.Spec.PublishNotReadyAddresses {
		t.Errorf("nats: governing Service %q must be headless and publish not-ready addresses (peers find each other while starting)", ss.Spec.ServiceName)
	}
	// gopcast's GOPCAST_NATS_URL names the client Service.
	if cfg.natsURL == nil {
		t.Fatal("no GOPCAST_NATS_URL")
	}
	svc, ok := r.services[cfg.natsURL.Hostname()]
	if !ok || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == cfg.natsURL.Port() }) {
		t.Errorf("GOPCAST_NATS_URL %s does not name a Service port of the overlay", cfg.natsURL)
	} else if pods := r.podsOf(svc); len(pods) != 1 || pods[0].name != ss.Name {
		t.Errorf("GOPCAST_NATS_URL's Service does not reach the NATS StatefulSet")
	}
}

func mountOf(c corev1.Container, volume string) string {
	for _, m := range c.VolumeMounts {
		if m.Name == volume {
			return m.MountPath
		}
	}
	return ""
}

// checkMinIO: the dev overlay's MinIO and the Job that creates the bucket the media roles use,
// with public reads on live/ and vod/ and CORS for any origin.
func checkMinIO(t *testing.T, r *rendered, cfg gopcastConfig) {
	d, ok := r.deployments["minio"]
	if !ok {
		t.Fatal("no minio Deployment")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("minio: one replica")
	}
	if cfg.s3Endpoint == nil || cfg.s3Endpoint.Hostname() != "minio" {
		t.Fatalf("the S3 endpoint %v is not the minio Service", cfg.s3Endpoint)
	}
	svc, ok := r.services["minio"]
	if !ok || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == cfg.s3Endpoint.Port() }) {
		t.Errorf("no minio Service on port %s", cfg.s3Endpoint.Port())
	}
	job, ok := r.jobs["minio-init"]
	if !ok {
		t.Fatal("no minio-init Job")
	}
	c := job.Spec.Template.Spec.Containers[0]
	env := envOf(r, &c)
	script := strings.Join(slices.Concat(c.Command, c.Args), "\n")
	script = strings.NewReplacer("$BUCKET", env["BUCKET"]).Replace(script)
	checkMinIOInit(t, "minio-init", script, cfg.s3Endpoint.String(), cfg.bucket)
	// MinIO's root user is the S3 key of every role that writes media.
	me := envOf(r, &d.Spec.Template.Spec.Containers[0])
	if o := me["MINIO_API_CORS_ALLOW_ORIGIN"]; o != "" && o != "*" {
		t.Errorf("minio: MINIO_API_CORS_ALLOW_ORIGIN %q overrides the CORS minio-init sets", o)
	}
	for _, w := range r.workloads() {
		if role, rc := gopcastRole(w); slices.Contains(mediaRoles, role) {
			re := envOf(r, rc)
			if re["GOPCAST_S3_ACCESS_KEY"] != me["MINIO_ROOT_USER"] || re["GOPCAST_S3_SECRET_KEY"] != me["MINIO_ROOT_PASSWORD"] {
				t.Errorf("the %s's S3 keys are not MinIO's root credentials", role)
			}
		}
	}
	if s, ok := r.generated(secretName); ok {
		for _, k := range secretKeys {
			if len(s.Data[k]) == 0 {
				t.Errorf("dev Secret %s: key %s empty", secretName, k)
			}
		}
	} else {
		t.Errorf("the dev overlay must generate %s", secretName)
	}
}

// TestKubernetesReadme keeps the operator's instructions in line with what the overlays expect
// the operator to create.
func TestKubernetesReadme(t *testing.T) {
	b, err := os.ReadFile("k8s/README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, want := range append([]string{"kubectl apply -k", secretName, "gopcast-api-tls", "KEDA", "GOPCAST_JETSTREAM_SHARDS"}, secretKeys...) {
		if !strings.Contains(readme, want) {
			t.Errorf("k8s/README.md does not mention %q", want)
		}
	}
}

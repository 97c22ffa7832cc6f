// Package deployments holds how gopcast is deployed: the Docker Compose setup (compose/), the
// Kubernetes base, component and overlays (k8s/) and the per-role cost benchmark behind
// docs/scaling.md (bench/). The package itself has no code; its tests check, offline, that the
// compose file, the rendered Kubernetes objects and the repository's Dockerfile are well formed
// and agree with the gopcast binary: every GOPCAST_* variable they set is one gopcast reads,
// every role they run is a real role, and every setting they give passes gopcast's own
// validation.
package deployments

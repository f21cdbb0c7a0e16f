// Package contract is what this project's kubelet tells darwin-cri about a container in place of
// ContainerConfig.linux, which a darwin kubelet does not send (the CRI's Linux fields name
// cgroups, namespaces, capabilities and seccomp, none of which a Mac has). The pod's security
// context and the container's limits reach darwin-cri as ContainerConfig annotations under
// kubelet.darwin-cri.io/, which darwin-cri reads only from ContainerConfig (never from the pod's
// own annotations, which users write) and only when ContainerConfig.linux is absent. docs/cri.md
// and ../shared/KUBELET.md document the keys; cri-server/src/cri/kubelet_annotations.rs reads
// them.
package contract

import (
	"sort"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/kubernetes/pkg/securitycontext"
)

// Prefix of every key.
const Prefix = "kubelet.darwin-cri.io/"

// The keys.
const (
	RunAsUser          = Prefix + "run-as-user"         // decimal uid
	RunAsGroup         = Prefix + "run-as-group"        // decimal gid
	SupplementalGroups = Prefix + "supplemental-groups" // decimal gids, comma-separated
	Privileged         = Prefix + "privileged"          // "true"
	ReadOnlyRootfs     = Prefix + "readonly-rootfs"     // "true"
	NoNewPrivs         = Prefix + "no-new-privs"        // "true"
	CPULimit           = Prefix + "cpu-limit"           // millicores, decimal ("1500")
	MemoryLimit        = Prefix + "memory-limit"        // bytes, decimal
)

// Annotations are the keys for a container of a pod; extraGroups are groups kubelet adds (volume
// plugins' GIDs).
func Annotations(pod *v1.Pod, container *v1.Container, extraGroups []int64) map[string]string {
	out := map[string]string{}
	sc := securitycontext.DetermineEffectiveSecurityContext(pod, container)
	if sc != nil {
		if sc.RunAsUser != nil {
			out[RunAsUser] = strconv.FormatInt(*sc.RunAsUser, 10)
		}
		if sc.RunAsGroup != nil {
			out[RunAsGroup] = strconv.FormatInt(*sc.RunAsGroup, 10)
		}
		if sc.Privileged != nil && *sc.Privileged {
			out[Privileged] = "true"
		}
		if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
			out[ReadOnlyRootfs] = "true"
		}
		if securitycontext.AddNoNewPrivileges(sc) {
			out[NoNewPrivs] = "true"
		}
	}
	// As upstream's Linux kubelet: fsGroup, then supplementalGroups, then kubelet's own.
	var groups []int64
	if psc := pod.Spec.SecurityContext; psc != nil {
		if psc.FSGroup != nil {
			groups = append(groups, *psc.FSGroup)
		}
		groups = append(groups, psc.SupplementalGroups...)
	}
	groups = append(groups, extraGroups...)
	if len(groups) > 0 {
		seen := map[int64]bool{}
		var s []string
		for _, g := range groups {
			if !seen[g] {
				seen[g] = true
				s = append(s, strconv.FormatInt(g, 10))
			}
		}
		out[SupplementalGroups] = strings.Join(s, ",")
	}
	if q, ok := container.Resources.Limits[v1.ResourceCPU]; ok && !q.IsZero() {
		out[CPULimit] = strconv.FormatInt(q.MilliValue(), 10)
	}
	if q, ok := container.Resources.Limits[v1.ResourceMemory]; ok && !q.IsZero() {
		out[MemoryLimit] = strconv.FormatInt(q.Value(), 10)
	}
	return out
}

// Keys lists a map's keys in order (for logs and tests).
func Keys(m map[string]string) []string {
	k := make([]string, 0, len(m))
	for key := range m {
		k = append(k, key)
	}
	sort.Strings(k)
	return k
}

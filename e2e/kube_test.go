package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// manifest is testdata/<name> with the farm's registry names replaced by the test registries.
func (c *cluster) manifest(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.ReplaceAll(string(b), "private.registry.local:5000", c.private.addr)
	return strings.ReplaceAll(s, "registry.local:5000", c.registry.addr)
}

// apply applies testdata/<name> in namespace ns.
func (c *cluster) apply(t *testing.T, ns, name string) {
	t.Helper()
	if _, err := c.kubectlIn(c.manifest(t, name), "apply", "-n", ns, "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// run is kubectl that fails the test on error.
func (c *cluster) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := c.kubectl(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// namespace creates a namespace for one test; it is deleted (and checked to leave nothing on
// the node) when the test ends.
func (c *cluster) namespace(t *testing.T, name string) string {
	t.Helper()
	c.run(t, "create", "namespace", name)
	// Pods are refused until the namespace's default service account exists.
	eventually(t, "the default service account of "+name, time.Minute, func() (bool, string) {
		_, err := c.kubectl("get", "serviceaccount", "default", "-n", name)
		return err == nil, fmt.Sprint(err)
	})
	t.Cleanup(func() {
		if _, err := c.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found"); err != nil {
			t.Log(err)
		}
	})
	return name
}

// eventually polls cond every 500 ms until it holds; it fails the test after timeout with the
// last thing cond said.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	last := ""
	for {
		ok, msg := cond()
		if ok {
			return time.Since(start)
		}
		if msg != "" {
			last = msg
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s; last: %s", what, timeout, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (c *cluster) pods(t *testing.T, ns, selector string) []corev1.Pod {
	t.Helper()
	var l corev1.PodList
	args := []string{"get", "pods", "-n", ns, "-o", "json"}
	if selector != "" {
		args = append(args, "-l", selector)
	}
	if err := c.getJSON(&l, args...); err != nil {
		t.Fatal(err)
	}
	return l.Items
}

func (c *cluster) pod(t *testing.T, ns, name string) corev1.Pod {
	t.Helper()
	var p corev1.Pod
	if err := c.getJSON(&p, "get", "pod", "-n", ns, name, "-o", "json"); err != nil {
		t.Fatal(err)
	}
	return p
}

func podReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// nodeState is what one namespace's pods hold on the node: sandbox and container ids in
// darwin-cri, and pod uids in kubelet's directories.
type nodeState struct {
	sandboxes  []string
	containers []string
	podUIDs    []string
}

// nodeStateOf records what namespace ns has on the node right now.
func (c *cluster) nodeStateOf(t *testing.T, ns string) nodeState {
	t.Helper()
	var s nodeState
	sbs, err := c.cri.sandboxes(ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, sb := range sbs {
		s.sandboxes = append(s.sandboxes, sb.Id)
		s.podUIDs = append(s.podUIDs, sb.Metadata.Uid)
	}
	ctrs, err := c.cri.containers(ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, ct := range ctrs {
		s.containers = append(s.containers, ct.Id)
	}
	slices.Sort(s.podUIDs)
	s.podUIDs = slices.Compact(s.podUIDs)
	return s
}

// leftovers lists what is still on the node of a recorded state: pods and containers darwin-cri
// lists, processes (containers, monitors), mounts and directories.
func (c *cluster) leftovers(t *testing.T, ns string, s nodeState) []string {
	t.Helper()
	var left []string
	if sbs, err := c.cri.sandboxes(ns); err != nil {
		left = append(left, err.Error())
	} else {
		for _, sb := range sbs {
			left = append(left, "pod sandbox "+sb.Id+" "+sb.Metadata.Name)
		}
	}
	if ctrs, err := c.cri.containers(ns); err != nil {
		left = append(left, err.Error())
	} else {
		for _, ct := range ctrs {
			left = append(left, "container "+ct.Id+" "+ct.Metadata.Name)
		}
	}
	needles := append(append(append([]string{}, s.sandboxes...), s.containers...), s.podUIDs...)
	for _, p := range processesMentioning(needles...) {
		left = append(left, fmt.Sprintf("process %d %q (root %s)", p.pid, p.cmdline, p.root))
	}
	for _, m := range mountsUnder(c.dir) {
		for _, n := range needles {
			if strings.Contains(m, n) {
				left = append(left, "mount "+m)
				break
			}
		}
	}
	for _, id := range s.sandboxes {
		if _, err := os.Stat(filepath.Join(c.criRoot, "pods", id)); err == nil {
			left = append(left, "directory "+filepath.Join(c.criRoot, "pods", id))
		}
	}
	for _, uid := range s.podUIDs {
		if _, err := os.Stat(filepath.Join(c.kubeletRoot, "pods", uid)); err == nil {
			left = append(left, "directory "+filepath.Join(c.kubeletRoot, "pods", uid))
		}
	}
	return left
}

// deleteAndCheck deletes namespace ns with everything in it and waits until the node holds
// nothing of it; the time from the delete to nothing left is recorded.
func (c *cluster) deleteAndCheck(t *testing.T, ns string) {
	t.Helper()
	s := c.nodeStateOf(t, ns)
	if len(s.sandboxes) == 0 {
		t.Fatalf("namespace %s has no pods on the node to delete", ns)
	}
	start := time.Now()
	c.run(t, "delete", "namespace", ns, "--wait=false")
	eventually(t, "namespace "+ns+" gone", 3*time.Minute, func() (bool, string) {
		_, err := c.kubectl("get", "namespace", ns)
		if err == nil {
			return false, "still there"
		}
		return strings.Contains(err.Error(), "NotFound"), err.Error()
	})
	c.record(t, "delete "+ns+" -> namespace gone from the API", time.Since(start))
	// kubelet removes the sandboxes of deleted pods in its container garbage collection, once a
	// minute: up to a minute more.
	eventually(t, "nothing of "+ns+" left on the node", 2*time.Minute, func() (bool, string) {
		left := c.leftovers(t, ns, s)
		return len(left) == 0, strings.Join(left, "; ")
	})
	c.record(t, "delete "+ns+" -> nothing left on the node", time.Since(start))
}

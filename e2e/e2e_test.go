package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// TestE2E runs the checks in order: the node first, then the workloads side by side, then the
// restarts of darwin-cri and kubelet under a running pod (which would disturb the others).
func TestE2E(t *testing.T) {
	t.Run("node", testNode)
	t.Run("workloads", func(t *testing.T) {
		t.Run("ios-build-job", testIOSBuildJob)
		t.Run("failing-job", testFailingJob)
		t.Run("deployment", testDeployment)
		t.Run("pending", testPending)
		t.Run("images", testImages)
	})
	t.Run("restarts", testRestarts)
}

func testNode(t *testing.T) {
	var n corev1.Node
	if err := c.getJSON(&n, "get", "node", c.nodeName, "-o", "json"); err != nil {
		t.Fatal(err)
	}
	if !nodeReady(&n) {
		t.Fatalf("node %s is not Ready: %+v", c.nodeName, n.Status.Conditions)
	}
	if got := n.Labels["kubernetes.io/os"]; got != c.nodeOS {
		t.Errorf("kubernetes.io/os = %q, want %q", got, c.nodeOS)
	}
	if got := n.Labels["kubernetes.io/arch"]; got != ociArch() {
		t.Errorf("kubernetes.io/arch = %q, want %q", got, ociArch())
	}
	tainted := false
	for _, taint := range n.Spec.Taints {
		if taint.Key == "darwin-cri.io/macos" && taint.Value == "true" && taint.Effect == corev1.TaintEffectNoSchedule {
			tainted = true
		}
	}
	if !tainted {
		t.Errorf("no darwin-cri.io/macos=true:NoSchedule taint: %+v", n.Spec.Taints)
	}
	// darwin-cri's node reporter (with the kubelet's own credentials) adds the Xcode labels.
	eventually(t, "the Xcode labels", 60*time.Second, func() (bool, string) {
		if err := c.getJSON(&n, "get", "node", c.nodeName, "-o", "json"); err != nil {
			return false, err.Error()
		}
		return n.Labels["darwin-cri.io/xcode-16.2"] == "true", fmt.Sprint(n.Labels)
	})
	t.Logf("labels: %v", n.Labels)
	// Capacity is the machine's; allocatable is capacity minus systemReserved, kubeReserved and
	// the hard eviction thresholds (none on memory in deploy/kubelet-config.yaml).
	capCPU, capMem := n.Status.Capacity[corev1.ResourceCPU], n.Status.Capacity[corev1.ResourceMemory]
	if capCPU.IsZero() || capMem.IsZero() {
		t.Fatalf("capacity has no cpu or memory: %v", n.Status.Capacity)
	}
	if got, want := capCPU.MilliValue(), int64(1000*numCPU()); got != want {
		t.Errorf("capacity cpu = %dm, the machine has %dm", got, want)
	}
	if memTotal := machineMemory(t); memTotal > 0 && capMem.Value() != memTotal {
		t.Errorf("capacity memory = %d, the machine has %d", capMem.Value(), memTotal)
	}
	// The hard eviction thresholds kept back: memory.available from memory, nodefs.available from
	// ephemeral storage (a percentage is of the capacity).
	signal := map[corev1.ResourceName]string{
		corev1.ResourceMemory:           "memory.available",
		corev1.ResourceEphemeralStorage: "nodefs.available",
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourceEphemeralStorage} {
		capacity, ok := n.Status.Capacity[r]
		if !ok {
			if r != corev1.ResourceEphemeralStorage {
				t.Errorf("no %s in capacity", r)
			}
			continue
		}
		reserved, got := c.reserved[r], n.Status.Allocatable[r]
		want := capacity.DeepCopy()
		want.Sub(reserved)
		if th := c.evictionHard[signal[r]]; th != "" {
			if pct, ok := strings.CutSuffix(th, "%"); ok {
				var f float64
				fmt.Sscanf(pct, "%g", &f)
				want.Sub(*resource.NewQuantity(int64(float64(capacity.Value())*f/100), resource.BinarySI))
			} else {
				want.Sub(resource.MustParse(th))
			}
		}
		// Percentages are float32 in kubelet: allow a millionth of the capacity.
		if diff := got.Value() - want.Value(); diff > capacity.Value()/1_000_000 || -diff > capacity.Value()/1_000_000 {
			t.Errorf("allocatable %s = %s, want capacity %s - reserved %s - eviction threshold %q = %s", r, got.String(),
				capacity.String(), reserved.String(), c.evictionHard[signal[r]], want.String())
		}
	}
	if pods := n.Status.Allocatable[corev1.ResourcePods]; pods.Value() != 32 {
		t.Errorf("allocatable pods = %s, want maxPods 32", pods.String())
	}
	t.Logf("capacity %v allocatable %v", n.Status.Capacity, n.Status.Allocatable)
	if c.nodeOS != "darwin" {
		// Upstream's Linux kubelet labels the node linux; the manifests are for darwin nodes.
		t.Logf("kubelet %s is not darwin-flavoured: labelling the node kubernetes.io/os=darwin for the workloads", c.kubeletBin)
		c.run(t, "label", "node", c.nodeName, "kubernetes.io/os=darwin", "--overwrite")
	}
}

func numCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "\nprocessor\t") + 1
}

func machineMemory(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(l, "MemTotal: %d kB", &kb); err == nil {
			return kb * 1024
		}
	}
	return 0
}

// waitJob waits until the Job has the condition (Complete or Failed) and returns it.
func (c *cluster) waitJob(t *testing.T, ns, name string, want batchv1.JobConditionType, timeout time.Duration) batchv1.Job {
	t.Helper()
	var j batchv1.Job
	eventually(t, "job "+name+" "+string(want), timeout, func() (bool, string) {
		if err := c.getJSON(&j, "get", "job", "-n", ns, name, "-o", "json"); err != nil {
			return false, err.Error()
		}
		for _, cond := range j.Status.Conditions {
			if cond.Status != corev1.ConditionTrue {
				continue
			}
			if cond.Type == want {
				return true, ""
			}
			if cond.Type == batchv1.JobComplete || cond.Type == batchv1.JobFailed {
				pods, _ := c.kubectl("get", "pods", "-n", ns, "-o", "wide")
				t.Fatalf("job %s is %s (%s: %s), not %s\n%s", name, cond.Type, cond.Reason, cond.Message, want, pods)
			}
		}
		return false, fmt.Sprintf("%+v", j.Status)
	})
	return j
}

func testIOSBuildJob(t *testing.T) {
	t.Parallel()
	ns := c.namespace(t, "ios-build")
	start := time.Now()
	c.apply(t, ns, "ios-build-job.yaml")
	c.waitJob(t, ns, "ios-build", batchv1.JobComplete, 3*time.Minute)
	c.record(t, "ios-build Job created -> Succeeded", time.Since(start))
	pods := c.pods(t, ns, "app=ios-build")
	if len(pods) != 1 || pods[0].Status.Phase != corev1.PodSucceeded {
		t.Fatalf("want one Succeeded pod, got %d: %+v", len(pods), pods)
	}
	logs := c.run(t, "logs", "-n", ns, "job/ios-build")
	for _, want := range []string{"building Demo as uid 1000", "Demo.ipa", "** BUILD SUCCEEDED **"} {
		if !strings.Contains(logs, want) {
			t.Errorf("kubectl logs lacks %q:\n%s", want, logs)
		}
	}
	t.Logf("kubectl logs job/ios-build:\n%s", logs)
	c.deleteAndCheck(t, ns)
}

func testFailingJob(t *testing.T) {
	t.Parallel()
	ns := c.namespace(t, "failing-build")
	start := time.Now()
	c.apply(t, ns, "failing-job.yaml")
	j := c.waitJob(t, ns, "failing-build", batchv1.JobFailed, 4*time.Minute)
	c.record(t, "failing Job created -> Failed (backoffLimit 1)", time.Since(start))
	if j.Status.Failed != 2 {
		t.Errorf("status.failed = %d, want 2 (backoffLimit 1)", j.Status.Failed)
	}
	pods := c.pods(t, ns, "app=failing-build")
	if len(pods) == 0 {
		t.Fatal("no pods")
	}
	for _, p := range pods {
		if p.Status.Phase != corev1.PodFailed || len(p.Status.ContainerStatuses) != 1 ||
			p.Status.ContainerStatuses[0].State.Terminated == nil {
			t.Errorf("pod %s: phase %s, %+v", p.Name, p.Status.Phase, p.Status.ContainerStatuses)
			continue
		}
		if code := p.Status.ContainerStatuses[0].State.Terminated.ExitCode; code != 3 {
			t.Errorf("pod %s: exit code %d, want 3", p.Name, code)
		}
	}
	logs := c.run(t, "logs", "-n", ns, pods[0].Name)
	if !strings.Contains(logs, "no such scheme") {
		t.Errorf("kubectl logs: %q", logs)
	}
	c.deleteAndCheck(t, ns)
}

func testDeployment(t *testing.T) {
	t.Parallel()
	ns := c.namespace(t, "build-cache")
	start := time.Now()
	c.apply(t, ns, "build-cache-deployment.yaml")
	if _, err := c.kubectl("rollout", "status", "-n", ns, "deployment/build-cache", "--timeout=3m"); err != nil {
		t.Fatal(err)
	}
	c.run(t, "wait", "-n", ns, "--for=condition=Available", "deployment/build-cache", "--timeout=1m")
	c.record(t, "Deployment created -> Available", time.Since(start))
	pods := c.pods(t, ns, "app=build-cache")
	if len(pods) != 1 {
		t.Fatalf("want 1 pod, got %d", len(pods))
	}
	pod := pods[0].Name

	t.Run("exec", func(t *testing.T) {
		out := c.run(t, "exec", "-n", ns, pod, "-c", "cache", "--", "sh", "-c", "echo hello from $(id -u); cat /tmp/www/index.html; test -t 0 || echo no-tty")
		if !strings.Contains(out, "hello from 1000") || !strings.Contains(out, "cache-ok") || !strings.Contains(out, "no-tty") {
			t.Errorf("exec: %q", out)
		}
		// A failing command's exit code comes back.
		_, err := c.kubectl("exec", "-n", ns, pod, "-c", "cache", "--", "sh", "-c", "exit 7")
		var ee *exec.ExitError
		if !errorsAs(err, &ee) || ee.ExitCode() != 7 {
			t.Errorf("exec of exit 7: %v", err)
		}
	})
	t.Run("exec-tty", func(t *testing.T) {
		// kubectl allocates a TTY only when its own stdin is a terminal: script(1) gives it one.
		// (`tty` itself fails in a container: docs/streaming.md.)
		cmdline := fmt.Sprintf("%s kubectl --kubeconfig %s exec -it -n %s %s -c cache -- sh -c 'test -t 0 && test -t 1 && echo tty-ok; stty size'",
			c.kubeCluster, c.adminKubeconfig, ns, pod)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "script", "-qec", cmdline, "/dev/null").CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if !strings.Contains(string(out), "tty-ok") {
			t.Errorf("exec -it: %q", out)
		}
	})
	t.Run("attach", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, c.kubeCluster, "kubectl", "--kubeconfig", c.adminKubeconfig,
			"attach", "-i", "-n", ns, pod, "-c", "console")
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && !strings.Contains(out.String(), "console got: hello") {
			_, _ = io.WriteString(in, "hello\n")
			time.Sleep(time.Second)
		}
		_ = in.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if !strings.Contains(out.String(), "console got: hello") {
			t.Errorf("attach: %q", out.String())
		}
	})
	t.Run("port-forward", func(t *testing.T) {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cmd := exec.CommandContext(ctx, c.kubeCluster, "kubectl", "--kubeconfig", c.adminKubeconfig,
			"port-forward", "-n", ns, "pod/"+pod, fmt.Sprintf("%d:38080", port))
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cancel(); _ = cmd.Wait() }()
		body := ""
		eventually(t, "a page through port-forward", 20*time.Second, func() (bool, string) {
			resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/index.html", port))
			if err != nil {
				return false, err.Error() + " " + out.String()
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			body = string(b)
			return true, ""
		})
		if strings.TrimSpace(body) != "cache-ok" {
			t.Errorf("port-forward: %q", body)
		}
	})
	t.Run("cp", func(t *testing.T) {
		dir := t.TempDir()
		src := filepath.Join(dir, "in.txt")
		if err := os.WriteFile(src, []byte("copied in\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		c.run(t, "cp", "-n", ns, "-c", "cache", src, pod+":/tmp/in.txt")
		if out := c.run(t, "exec", "-n", ns, pod, "-c", "cache", "--", "cat", "/tmp/in.txt"); out != "copied in\n" {
			t.Errorf("after cp in: %q", out)
		}
		dst := filepath.Join(dir, "out.html")
		c.run(t, "cp", "-n", ns, "-c", "cache", pod+":/tmp/www/index.html", dst)
		if b, err := os.ReadFile(dst); err != nil || string(b) != "cache-ok\n" {
			t.Errorf("cp out: %q %v", b, err)
		}
	})
	t.Run("summary-api", func(t *testing.T) { c.checkSummary(t, ns, pod) })
	t.Run("liveness-restart", func(t *testing.T) {
		before := c.pod(t, ns, pod)
		restarts := containerStatus(&before, "cache").RestartCount
		c.run(t, "exec", "-n", ns, pod, "-c", "cache", "--", "rm", "/tmp/healthy")
		d := eventually(t, "a restart after the liveness probe fails", 90*time.Second, func() (bool, string) {
			p := c.pod(t, ns, pod)
			st := containerStatus(&p, "cache")
			return st.RestartCount > restarts && st.Ready, fmt.Sprintf("%+v", st)
		})
		c.record(t, "liveness failure -> restarted and Ready", d)
		events := c.run(t, "get", "events", "-n", ns, "--field-selector", "involvedObject.name="+pod)
		if !strings.Contains(events, "Unhealthy") || !strings.Contains(events, "Liveness probe failed") {
			t.Errorf("no liveness event:\n%s", events)
		}
	})
	c.deleteAndCheck(t, ns)
}

func errorsAs(err error, target **exec.ExitError) bool {
	for err != nil {
		if e, ok := err.(*exec.ExitError); ok {
			*target = e
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func containerStatus(p *corev1.Pod, name string) corev1.ContainerStatus {
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == name {
			return s
		}
	}
	return corev1.ContainerStatus{}
}

// checkSummary reads the kubelet's summary API through the API server's node proxy: the node,
// the pod and each of its containers have CPU and memory figures.
func (c *cluster) checkSummary(t *testing.T, ns, pod string) {
	var s statsapi.Summary
	eventually(t, "summary API figures", 60*time.Second, func() (bool, string) {
		out, err := c.kubectl("get", "--raw", "/api/v1/nodes/"+c.nodeName+"/proxy/stats/summary")
		if err != nil {
			return false, err.Error()
		}
		s = statsapi.Summary{}
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			return false, err.Error()
		}
		problems := summaryProblems(&s, ns, pod)
		return len(problems) == 0, strings.Join(problems, "; ")
	})
	n := s.Node
	t.Logf("node: cpu %d nanocores, memory working set %d bytes", deref(n.CPU.UsageNanoCores), deref(n.Memory.WorkingSetBytes))
	for _, p := range s.Pods {
		if p.PodRef.Namespace == ns {
			for _, ct := range p.Containers {
				t.Logf("container %s: cpu %d ns total, memory working set %d bytes", ct.Name,
					deref(ct.CPU.UsageCoreNanoSeconds), deref(ct.Memory.WorkingSetBytes))
			}
		}
	}
}

func deref(p *uint64) uint64 {
	if p == nil {
		return 0
	}
	return *p
}

func summaryProblems(s *statsapi.Summary, ns, pod string) []string {
	var bad []string
	nz := func(what string, p *uint64) {
		if p == nil || *p == 0 {
			bad = append(bad, what+" is missing or zero")
		}
	}
	if s.Node.CPU == nil || s.Node.Memory == nil {
		bad = append(bad, "no node cpu or memory")
	} else {
		nz("node cpu usageNanoCores", s.Node.CPU.UsageNanoCores)
		if u := deref(s.Node.CPU.UsageNanoCores); u > uint64(numCPU())*1_050_000_000 {
			bad = append(bad, fmt.Sprintf("node cpu usageNanoCores %d is more than the machine's %d cores", u, numCPU()))
		}
		nz("node memory workingSetBytes", s.Node.Memory.WorkingSetBytes)
	}
	found := false
	for _, p := range s.Pods {
		if p.PodRef.Namespace != ns || p.PodRef.Name != pod {
			continue
		}
		found = true
		if p.CPU == nil || p.Memory == nil {
			bad = append(bad, "no pod cpu or memory")
		} else {
			nz("pod cpu usageCoreNanoSeconds", p.CPU.UsageCoreNanoSeconds)
			nz("pod memory workingSetBytes", p.Memory.WorkingSetBytes)
		}
		if len(p.Containers) != 2 {
			bad = append(bad, fmt.Sprintf("%d containers in the pod's stats, want 2", len(p.Containers)))
		}
		for _, ct := range p.Containers {
			if ct.CPU == nil || ct.Memory == nil {
				bad = append(bad, "no cpu or memory for container "+ct.Name)
				continue
			}
			nz("container "+ct.Name+" cpu usageCoreNanoSeconds", ct.CPU.UsageCoreNanoSeconds)
			nz("container "+ct.Name+" memory workingSetBytes", ct.Memory.WorkingSetBytes)
		}
	}
	if !found {
		bad = append(bad, "pod "+pod+" not in the summary")
	}
	return bad
}

func testPending(t *testing.T) {
	t.Parallel()
	ns := c.namespace(t, "too-big")
	c.apply(t, ns, "too-big-pod.yaml")
	eventually(t, "the scheduler's reason", time.Minute, func() (bool, string) {
		p := c.pod(t, ns, "too-big")
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse &&
				cond.Reason == corev1.PodReasonUnschedulable && strings.Contains(cond.Message, "Insufficient memory") {
				t.Logf("Pending: %s", cond.Message)
				return true, ""
			}
		}
		return false, fmt.Sprintf("%s %+v", p.Status.Phase, p.Status.Conditions)
	})
	// And it stays so.
	time.Sleep(3 * time.Second)
	if p := c.pod(t, ns, "too-big"); p.Status.Phase != corev1.PodPending || p.Spec.NodeName != "" {
		t.Errorf("phase %s on %q", p.Status.Phase, p.Spec.NodeName)
	}
}

func testImages(t *testing.T) {
	t.Parallel()
	ns := c.namespace(t, "images")
	t.Run("missing", func(t *testing.T) {
		c.apply(t, ns, "missing-image-pod.yaml")
		seen := map[string]string{}
		eventually(t, "ErrImagePull then ImagePullBackOff", 2*time.Minute, func() (bool, string) {
			p := c.pod(t, ns, "missing-image")
			st := containerStatus(&p, "build")
			if w := st.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
				seen[w.Reason] = w.Message
			}
			return seen["ImagePullBackOff"] != "", fmt.Sprintf("%+v", st.State)
		})
		events := c.run(t, "get", "events", "-n", ns, "--field-selector", "involvedObject.name=missing-image")
		t.Logf("waiting: %v\nevents:\n%s", seen, events)
		if !strings.Contains(events, "ErrImagePull") || !strings.Contains(events, "does-not-exist") {
			t.Errorf("events lack ErrImagePull for the image:\n%s", events)
		}
		// darwin-cri's NotFound names the reference as written, once.
		if msg := seen["ImagePullBackOff"]; !strings.Contains(msg, `/e2e/does-not-exist:1" not found`) {
			t.Errorf("ImagePullBackOff message does not name the image: %q", msg)
		}
	})
	t.Run("private", func(t *testing.T) {
		c.run(t, "create", "secret", "docker-registry", "private-registry", "-n", ns,
			"--docker-server="+c.private.addr, "--docker-username="+c.private.user, "--docker-password="+c.private.pass)
		start := time.Now()
		c.apply(t, ns, "private-image-pod.yaml")
		eventually(t, "the private image's pod Succeeded", 2*time.Minute, func() (bool, string) {
			p := c.pod(t, ns, "private-image")
			return p.Status.Phase == corev1.PodSucceeded, fmt.Sprintf("%s %+v", p.Status.Phase, p.Status.ContainerStatuses)
		})
		c.record(t, "pod with a private image (imagePullSecret) -> Succeeded", time.Since(start))
		if logs := c.run(t, "logs", "-n", ns, "private-image"); !strings.Contains(logs, "pulled with a secret") {
			t.Errorf("logs: %q", logs)
		}
	})
	c.deleteAndCheck(t, ns)
}

// testRestarts restarts darwin-cri, then the kubelet, under a running pod: the pod keeps
// running with the same container, no restart is counted, and its log goes on.
func testRestarts(t *testing.T) {
	ns := c.namespace(t, "restarts")
	c.apply(t, ns, "long-build-pod.yaml")
	c.run(t, "wait", "-n", ns, "--for=condition=Ready", "pod/long-build", "--timeout=2m")
	before := containerStatus(ptr(c.pod(t, ns, "long-build")), "build")
	same := func(what string) {
		t.Helper()
		// Longer than a few PLEG relists and probe periods.
		time.Sleep(12 * time.Second)
		p := c.pod(t, ns, "long-build")
		st := containerStatus(&p, "build")
		if p.Status.Phase != corev1.PodRunning || st.ContainerID != before.ContainerID ||
			st.RestartCount != before.RestartCount || !st.Ready || st.State.Running == nil {
			t.Errorf("after %s: phase %s, container %s (was %s), restarts %d (were %d), ready %v, state %+v",
				what, p.Status.Phase, st.ContainerID, before.ContainerID, st.RestartCount, before.RestartCount, st.Ready, st.State)
		}
		logs := c.run(t, "logs", "-n", ns, "long-build", "--tail=2")
		if !strings.Contains(logs, "compiling unit") {
			t.Errorf("after %s: logs %q", what, logs)
		}
	}
	t.Run("darwin-cri", func(t *testing.T) {
		start := time.Now()
		c.darwinCRI.stop(15 * time.Second)
		if err := c.runDarwinCRI(); err != nil {
			t.Fatal(err)
		}
		c.record(t, "darwin-cri restart -> answering", time.Since(start))
		same("darwin-cri's restart")
	})
	t.Run("kubelet", func(t *testing.T) {
		c.kubelet.stop(15 * time.Second)
		if err := c.runKubelet(); err != nil {
			t.Fatal(err)
		}
		c.record(t, "kubelet restart -> node Ready", time.Since(c.kubeletStarted))
		same("the kubelet's restart")
	})
	c.deleteAndCheck(t, ns)
}

func ptr[T any](v T) *T { return &v }

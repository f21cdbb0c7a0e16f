// Command kube-cluster is one binary holding a whole Kubernetes control plane for the end-to-end
// tests (as k3s does): etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl,
// plus an upstream kubelet for when no darwin-flavoured kubelet has been built. All of them come
// from the Kubernetes release in go.mod (etcd at the version that release's client pins). One
// binary links the shared code once, which keeps the build to a few minutes on two cores.
//
// Usage: kube-cluster <etcd|apiserver|controller-manager|scheduler|kubectl|kubelet> [flags...]
// A link named after a subcommand (e.g. kubectl -> kube-cluster) runs that subcommand.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	_ "time/tzdata" // CronJob time zones (the API server and controller manager want them)

	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

const usage = "usage: kube-cluster <etcd|apiserver|controller-manager|scheduler|kubectl|kubelet> [flags...]"

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if name == "kube-cluster" || !known(name) {
		if len(args) == 0 {
			fmt.Fprintln(os.Stderr, usage)
			os.Exit(2)
		}
		name, args = args[0], args[1:]
	}
	// Each upstream command parses os.Args[1:] itself.
	os.Args = append([]string{name}, args...)
	os.Exit(run(name))
}

func known(name string) bool {
	switch name {
	case "etcd", "apiserver", "kube-apiserver", "controller-manager", "kube-controller-manager",
		"scheduler", "kube-scheduler", "kubectl", "kubelet":
		return true
	}
	return false
}

func run(name string) int {
	switch strings.TrimPrefix(name, "kube-") {
	case "etcd":
		return runEtcd(os.Args[1:])
	case "apiserver":
		return cli.Run(apiserver.NewAPIServerCommand())
	case "controller-manager":
		return cli.Run(controllermanager.NewControllerManagerCommand())
	case "scheduler":
		return cli.Run(scheduler.NewSchedulerCommand())
	case "kubelet":
		return cli.Run(kubelet.NewKubeletCommand(context.Background()))
	case "kubectl", "ctl":
		logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) //nolint:errcheck
		if err := cli.RunNoErrOutput(kubectlcmd.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, usage)
	return 2
}

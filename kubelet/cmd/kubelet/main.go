// Command kubelet is upstream's kubelet (k8s.io/kubernetes/cmd/kubelet), built by
// scripts/build-kubelet.sh with this project's darwin files laid over upstream's packages
// (kubelet/overlay, docs/kubelet.md). Built without that overlay it is plain upstream kubelet.
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	os.Exit(cli.Run(app.NewKubeletCommand(context.Background())))
}

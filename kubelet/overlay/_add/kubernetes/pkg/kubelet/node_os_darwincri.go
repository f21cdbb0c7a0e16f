//go:build darwincri

package kubelet

import "darwin-cri.io/kubelet/pkg/node"

// darwincriNodeOS replaces runtime.GOOS in the node's labels (kubelet_node_status.go, patched by
// overlay/common.spec): a darwin node says darwin, and so does the twin's.
const darwincriNodeOS = node.OS

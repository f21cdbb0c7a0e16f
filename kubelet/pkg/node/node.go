// Package node holds what this project's kubelet says about its node.
package node

// OS is the operating system the node reports (kubernetes.io/os): darwin, also for the
// darwin-flavoured Linux kubelet that drives darwin-cri's Linux twin in CI, whose pods are
// scheduled as a Mac's would be.
const OS = "darwin"

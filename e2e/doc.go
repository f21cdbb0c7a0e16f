// Package e2e holds darwin-cri's end-to-end tests through kubectl: a whole Kubernetes cluster
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler from cmd/kube-cluster) started
// on loopback by the test harness, darwin-cri's Linux twin, and a kubelet that joins through TLS
// bootstrapping with a bootstrap token, as a Mac does. The tests apply the manifests under
// testdata/ with kubectl and check what a user sees. docs/e2e.md describes the harness.
package e2e

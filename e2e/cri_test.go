package e2e

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// criClient talks to darwin-cri's socket directly, as crictl would: the tests look behind
// kubectl with it (what is left on the node after a delete) and the harness removes what is left
// at the end.
type criClient struct {
	conn *grpc.ClientConn
	rt   cri.RuntimeServiceClient
}

func dialCRI(socket string) (*criClient, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return nil, err
	}
	return &criClient{conn: conn, rt: cri.NewRuntimeServiceClient(conn)}, nil
}

func (c *criClient) close() { _ = c.conn.Close() }

func (c *criClient) version() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := c.rt.Version(ctx, &cri.VersionRequest{})
	return err
}

// sandboxes lists the pod sandboxes whose pod is in namespace ns ("": all).
func (c *criClient) sandboxes(ns string) ([]*cri.PodSandbox, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := &cri.PodSandboxFilter{}
	if ns != "" {
		f.LabelSelector = map[string]string{"io.kubernetes.pod.namespace": ns}
	}
	r, err := c.rt.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{Filter: f})
	if err != nil {
		return nil, err
	}
	return r.Items, nil
}

// containers lists the containers whose pod is in namespace ns ("": all).
func (c *criClient) containers(ns string) ([]*cri.Container, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f := &cri.ContainerFilter{}
	if ns != "" {
		f.LabelSelector = map[string]string{"io.kubernetes.pod.namespace": ns}
	}
	r, err := c.rt.ListContainers(ctx, &cri.ListContainersRequest{Filter: f})
	if err != nil {
		return nil, err
	}
	return r.Containers, nil
}

// removeAll stops and removes every pod sandbox (and so its containers), for the teardown.
func (c *criClient) removeAll() error {
	sbs, err := c.sandboxes("")
	if err != nil {
		return err
	}
	for _, sb := range sbs {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _ = c.rt.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: sb.Id})
		_, err = c.rt.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: sb.Id})
		cancel()
	}
	return err
}

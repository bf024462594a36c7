//go:build runtimes

// Package cri is a small CRI v1 client: the calls the kubelet makes to run
// and tear down a pod (RunPodSandbox, CreateContainer, StartContainer,
// StopPodSandbox, RemovePodSandbox), plus status and exec for assertions.
// crictl cannot be installed here; this speaks the same gRPC API.
package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	rt "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Client talks to one CRI endpoint (a unix socket).
type Client struct {
	conn *grpc.ClientConn
	RT   rt.RuntimeServiceClient
	Img  rt.ImageServiceClient
}

// Dial connects to the CRI socket at path (no I/O until the first call).
func Dial(path string) (*Client, error) {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dial CRI %s: %w", path, err)
	}
	return &Client{conn: conn, RT: rt.NewRuntimeServiceClient(conn), Img: rt.NewImageServiceClient(conn)}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Pod describes a pod sandbox the way the kubelet fills it in.
type Pod struct {
	Name, Namespace, UID string
	Handler              string // runtime handler (RuntimeClass); "" is the default
	Ports                []*rt.PortMapping
	Annotations          map[string]string
	LogDir               string
}

// Config returns the sandbox config the kubelet would send for p: DNS is
// always filled (the kubelet does), the network namespace is the pod's own.
func (p *Pod) Config() *rt.PodSandboxConfig {
	return &rt.PodSandboxConfig{
		Metadata:     &rt.PodSandboxMetadata{Name: p.Name, Namespace: p.Namespace, Uid: p.UID},
		Hostname:     p.Name,
		LogDirectory: p.LogDir,
		DnsConfig:    &rt.DNSConfig{Servers: []string{"192.0.2.53"}, Searches: []string{p.Namespace + ".svc.cluster.local"}, Options: []string{"ndots:5"}},
		PortMappings: p.Ports,
		Labels:       map[string]string{"io.kubernetes.pod.name": p.Name, "io.kubernetes.pod.namespace": p.Namespace},
		Annotations:  p.Annotations,
		Linux: &rt.LinuxPodSandboxConfig{SecurityContext: &rt.LinuxSandboxSecurityContext{
			NamespaceOptions: &rt.NamespaceOption{Network: rt.NamespaceMode_POD, Pid: rt.NamespaceMode_CONTAINER, Ipc: rt.NamespaceMode_POD},
		}},
	}
}

// RunPod runs the sandbox (CNI ADD happens here) and returns its ID.
func (c *Client) RunPod(ctx context.Context, p *Pod) (string, error) {
	if p.LogDir != "" {
		if err := os.MkdirAll(p.LogDir, 0o755); err != nil {
			return "", err
		}
	}
	r, err := c.RT.RunPodSandbox(ctx, &rt.RunPodSandboxRequest{Config: p.Config(), RuntimeHandler: p.Handler})
	if err != nil {
		return "", fmt.Errorf("RunPodSandbox %s: %w", p.Name, err)
	}
	return r.PodSandboxId, nil
}

// Start creates and starts a container of image running argv in the pod.
func (c *Client) Start(ctx context.Context, podID string, p *Pod, name, image string, argv ...string) (string, error) {
	cfg := &rt.ContainerConfig{
		Metadata: &rt.ContainerMetadata{Name: name},
		Image:    &rt.ImageSpec{Image: image},
		Command:  argv,
		LogPath:  name + ".log",
		Linux:    &rt.LinuxContainerConfig{SecurityContext: &rt.LinuxContainerSecurityContext{}},
	}
	cr, err := c.RT.CreateContainer(ctx, &rt.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: p.Config()})
	if err != nil {
		return "", fmt.Errorf("CreateContainer %s in %s: %w", name, p.Name, err)
	}
	if _, err := c.RT.StartContainer(ctx, &rt.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
		return "", fmt.Errorf("StartContainer %s in %s: %w", name, p.Name, err)
	}
	return cr.ContainerId, nil
}

// StopPod stops the sandbox and its containers (first CNI DEL).
func (c *Client) StopPod(ctx context.Context, podID string) error {
	if _, err := c.RT.StopPodSandbox(ctx, &rt.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		return fmt.Errorf("StopPodSandbox %s: %w", podID, err)
	}
	return nil
}

// RemovePod removes the stopped sandbox (second CNI DEL: no netns, no
// prevResult).
func (c *Client) RemovePod(ctx context.Context, podID string) error {
	if _, err := c.RT.RemovePodSandbox(ctx, &rt.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		return fmt.Errorf("RemovePodSandbox %s: %w", podID, err)
	}
	return nil
}

// PodIPs returns the addresses the CRI reports for the pod (what the
// kubelet puts into the Pod's status.podIPs).
func (c *Client) PodIPs(ctx context.Context, podID string) ([]string, error) {
	r, err := c.RT.PodSandboxStatus(ctx, &rt.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		return nil, fmt.Errorf("PodSandboxStatus %s: %w", podID, err)
	}
	n := r.GetStatus().GetNetwork()
	if n == nil || n.Ip == "" {
		return nil, nil
	}
	ips := []string{n.Ip}
	for _, a := range n.AdditionalIps {
		ips = append(ips, a.Ip)
	}
	return ips, nil
}

// NetNSPath returns the pod's network namespace path (what the plugins
// got as CNI_NETNS), from the runtime spec in the verbose sandbox info.
func (c *Client) NetNSPath(ctx context.Context, podID string) (string, error) {
	r, err := c.RT.PodSandboxStatus(ctx, &rt.PodSandboxStatusRequest{PodSandboxId: podID, Verbose: true})
	if err != nil {
		return "", fmt.Errorf("PodSandboxStatus %s: %w", podID, err)
	}
	var info struct {
		RuntimeSpec struct {
			Linux struct {
				Namespaces []struct{ Type, Path string }
			}
		} `json:"runtimeSpec"`
	}
	if err := json.Unmarshal([]byte(r.Info["info"]), &info); err != nil {
		return "", fmt.Errorf("decode sandbox info of %s: %w", podID, err)
	}
	for _, ns := range info.RuntimeSpec.Linux.Namespaces {
		if ns.Type == "network" {
			return ns.Path, nil
		}
	}
	return "", fmt.Errorf("sandbox %s: no network namespace in its runtime spec", podID)
}

// Exec runs argv in a container and returns its stdout; a non-zero exit is
// an error carrying stdout and stderr.
func (c *Client) Exec(ctx context.Context, ctrID string, timeout time.Duration, argv ...string) (string, error) {
	r, err := c.RT.ExecSync(ctx, &rt.ExecSyncRequest{ContainerId: ctrID, Cmd: argv, Timeout: int64(timeout / time.Second)})
	if err != nil {
		return "", fmt.Errorf("ExecSync %v in %.12s: %w", argv, ctrID, err)
	}
	if r.ExitCode != 0 {
		return string(r.Stdout), fmt.Errorf("%v in %.12s exited %d: %s%s", argv, ctrID, r.ExitCode, r.Stdout, r.Stderr)
	}
	return string(r.Stdout), nil
}

// NetworkReady reports the runtime's NetworkReady condition, with its
// reason and message when false.
func (c *Client) NetworkReady(ctx context.Context) error {
	r, err := c.RT.Status(ctx, &rt.StatusRequest{})
	if err != nil {
		return fmt.Errorf("CRI Status: %w", err)
	}
	for _, cond := range r.GetStatus().GetConditions() {
		if cond.Type == rt.NetworkReady {
			if cond.Status {
				return nil
			}
			return fmt.Errorf("NetworkReady=false: %s: %s", cond.Reason, cond.Message)
		}
	}
	return errors.New("CRI Status has no NetworkReady condition")
}

// HasImage reports whether the image service knows ref.
func (c *Client) HasImage(ctx context.Context, ref string) (bool, error) {
	r, err := c.Img.ImageStatus(ctx, &rt.ImageStatusRequest{Image: &rt.ImageSpec{Image: ref}})
	if err != nil {
		return false, fmt.Errorf("ImageStatus %s: %w", ref, err)
	}
	return r.Image != nil, nil
}

// RemoveAll stops and removes every pod sandbox, joining the errors (the
// cleanup a kubelet does for pods that no longer exist).
func (c *Client) RemoveAll(ctx context.Context) error {
	r, err := c.RT.ListPodSandbox(ctx, &rt.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("ListPodSandbox: %w", err)
	}
	var errs []error
	for _, p := range r.Items {
		errs = append(errs, c.StopPod(ctx, p.Id), c.RemovePod(ctx, p.Id))
	}
	return errors.Join(errs...)
}

// LogPath is where the container named name of pod p logs.
func LogPath(p *Pod, name string) string { return filepath.Join(p.LogDir, name+".log") }

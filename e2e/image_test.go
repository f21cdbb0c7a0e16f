package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// The test image: the host's static busybox (Debian's busybox-static) with every applet linked
// in /bin, a user app (1000) and /home/app, as darwin-cri's own tests build it.

func busyboxLayer() ([]byte, error) {
	var bin string
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if _, err := os.Stat(p); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		return nil, fmt.Errorf("busybox is not installed (apt-get install busybox-static)")
	}
	list, err := exec.Command(bin, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1_700_000_000, 0)
	dir := func(name string, mode int64, uid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: mtime, Format: tar.FormatGNU})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime, Format: tar.FormatGNU}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []struct {
		name string
		mode int64
		uid  int
	}{{"bin", 0o755, 0}, {"etc", 0o755, 0}, {"tmp", 0o1777, 0}, {"root", 0o700, 0}, {"home", 0o755, 0}, {"home/app", 0o755, 1000}} {
		if err := dir(d.name, d.mode, d.uid); err != nil {
			return nil, err
		}
	}
	if err := file("bin/busybox", 0o755, body); err != nil {
		return nil, err
	}
	for _, a := range strings.Fields(string(list)) {
		if a == "busybox" {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: mtime, Format: tar.FormatGNU}); err != nil {
			return nil, err
		}
	}
	if err := file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")); err != nil {
		return nil, err
	}
	if err := file("etc/group", 0o644, []byte("root:x:0:\napp:x:1000:\nbuilders:x:2000:app\nnogroup:x:65534:\n")); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func ociArch() string { return runtime.GOARCH }

// busyboxLayout writes an OCI image layout of the test image at dir.
func busyboxLayout(dir string) error {
	layer, err := busyboxLayer()
	if err != nil {
		return err
	}
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return err
	}
	put := func(data []byte) (string, error) {
		sum := sha256.Sum256(data)
		h := hex.EncodeToString(sum[:])
		return "sha256:" + h, os.WriteFile(filepath.Join(blobs, h), data, 0o644)
	}
	diffSum := sha256.Sum256(layer)
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	if _, err := zw.Write(layer); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	layerDigest, err := put(gz.Bytes())
	if err != nil {
		return err
	}
	config, _ := json.Marshal(map[string]any{
		"architecture": ociArch(),
		"os":           "linux",
		"config": map[string]any{
			"Env":        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			"Cmd":        []string{"sh"},
			"WorkingDir": "/",
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diffSum[:])}},
	})
	configDigest, err := put(config)
	if err != nil {
		return err
	}
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": len(config)},
		"layers":        []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layerDigest, "size": gz.Len()}},
	})
	manifestDigest, err := put(manifest)
	if err != nil {
		return err
	}
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifestDigest, "size": len(manifest),
			"annotations": map[string]string{"org.opencontainers.image.ref.name": "latest"},
		}},
	})
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "index.json"), index, 0o644)
}

// registry is Debian's docker-registry on a free loopback port, plain HTTP, optionally with
// htpasswd basic auth.
type registry struct {
	addr string
	user string
	pass string
	proc *proc
}

func startRegistry(dir, name, user, pass string) (*registry, error) {
	bin := "/usr/bin/docker-registry"
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("docker-registry is not installed (apt-get install docker-registry)")
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	rdir := filepath.Join(dir, name)
	if err := os.MkdirAll(rdir, 0o755); err != nil {
		return nil, err
	}
	r := &registry{addr: fmt.Sprintf("127.0.0.1:%d", port), user: user, pass: pass}
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n", filepath.Join(rdir, "data"), r.addr)
	if user != "" {
		out, err := exec.Command("htpasswd", "-Bbn", user, pass).Output()
		if err != nil {
			return nil, fmt.Errorf("htpasswd (apt-get install apache2-utils): %w", err)
		}
		if err := os.WriteFile(filepath.Join(rdir, "htpasswd"), out, 0o644); err != nil {
			return nil, err
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: e2e\n    path: %s\n", filepath.Join(rdir, "htpasswd"))
	}
	if err := os.WriteFile(filepath.Join(rdir, "config.yml"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	r.proc, err = startProc(dir, name, bin, []string{"serve", filepath.Join(rdir, "config.yml")}, nil)
	if err != nil {
		return nil, err
	}
	err = waitFor(20*time.Second, func() (bool, error) {
		if r.proc.exited() {
			return false, fmt.Errorf("%s exited: %s", name, r.proc.tail(20))
		}
		resp, err := http.Get("http://" + r.addr + "/v2/")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return true, nil
	})
	return r, err
}

// push copies the OCI layout to repoTag on the registry with skopeo.
func (r *registry) push(layout, repoTag string) error {
	args := []string{"--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"}
	if r.user != "" {
		args = append(args, "--dest-creds="+r.user+":"+r.pass)
	}
	args = append(args, "oci:"+layout, "docker://"+r.addr+"/"+repoTag)
	out, err := exec.Command("skopeo", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("skopeo copy to %s (apt-get install skopeo): %v: %s", repoTag, err, out)
	}
	return nil
}

// waitFor polls cond every 200 ms until it is true, fails, or timeout passes.
func waitFor(timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

//go:build runtimes

// Package image builds the end-to-end tests' container images without a
// registry: a docker-archive tarball (what `ctr images import` reads) of
// one layer, or the same files as a root directory (podman --rootfs).
package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// File is one entry of the image's only layer.
type File struct {
	Path string // absolute, inside the image
	Mode int64  // permission bits
	Body []byte // regular file content
	Link string // symlink target (then Body is unused)
	Dir  bool
}

// Config is the part of the OCI image config a runtime reads.
type Config struct {
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	Env        []string `json:"Env,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

// stamp is a fixed modification time: the same files give the same digest.
var stamp = time.Unix(1_700_000_000, 0)

// Pause returns the files of a pause image: the static binary at /pause.
func Pause(bin string) ([]File, error) {
	body, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("read pause binary: %w", err)
	}
	return []File{{Path: "/pause", Mode: 0o755, Body: body}}, nil
}

// Busybox returns a minimal root file system around a static busybox: the
// binary, a symlink per applet, and the directories runtimes mount over.
func Busybox(bin string) ([]File, error) {
	body, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w", err)
	}
	out, err := exec.Command(bin, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("list busybox applets: %w", err)
	}
	files := []File{
		{Path: "/bin", Dir: true, Mode: 0o755},
		{Path: "/bin/busybox", Mode: 0o755, Body: body},
		{Path: "/etc", Dir: true, Mode: 0o755},
		{Path: "/etc/passwd", Mode: 0o644, Body: []byte("root:x:0:0:root:/root:/bin/sh\n")},
		{Path: "/etc/group", Mode: 0o644, Body: []byte("root:x:0:\n")},
	}
	for _, d := range []string{"/dev", "/proc", "/sys", "/tmp", "/root", "/run", "/var", "/www"} {
		files = append(files, File{Path: d, Dir: true, Mode: 0o755})
	}
	files = append(files, File{Path: "/www/index.html", Mode: 0o644, Body: []byte("netdrivers\n")})
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" && !strings.Contains(a, "/") {
			files = append(files, File{Path: "/bin/" + a, Link: "busybox"})
		}
	}
	return files, nil
}

// WriteRootfs materialises files under dir (podman --rootfs).
func WriteRootfs(dir string, files []File) error {
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		var err error
		switch {
		case f.Dir:
			err = os.MkdirAll(p, os.FileMode(f.Mode))
		case f.Link != "":
			err = os.Symlink(f.Link, p)
		default:
			err = os.WriteFile(p, f.Body, os.FileMode(f.Mode))
		}
		if err != nil {
			return fmt.Errorf("write rootfs entry %s: %w", f.Path, err)
		}
	}
	return nil
}

// layer renders files as an uncompressed tar, parents before children.
func layer(files []File) ([]byte, error) {
	sorted := append([]File(nil), files...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range sorted {
		h := &tar.Header{Name: strings.TrimPrefix(f.Path, "/"), Mode: f.Mode, ModTime: stamp, Format: tar.FormatPAX}
		switch {
		case f.Dir:
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
		case f.Link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.Link, 0o777
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Body); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteArchive writes a docker-archive (docker save format) holding one
// image named ref, of one layer with files, to w.
func WriteArchive(w io.Writer, ref string, files []File, cfg Config) error {
	lay, err := layer(files)
	if err != nil {
		return fmt.Errorf("build layer of %s: %w", ref, err)
	}
	sum := sha256.Sum256(lay)
	diffID := "sha256:" + hex.EncodeToString(sum[:])
	conf, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      stamp.UTC().Format(time.RFC3339),
		"config":       cfg,
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history":      []map[string]any{{"created": stamp.UTC().Format(time.RFC3339), "created_by": "netdrivers e2e"}},
	})
	if err != nil {
		return err
	}
	csum := sha256.Sum256(conf)
	confName := hex.EncodeToString(csum[:]) + ".json"
	layName := path.Join(hex.EncodeToString(sum[:]), "layer.tar")
	manifest, err := json.Marshal([]map[string]any{{"Config": confName, "RepoTags": []string{ref}, "Layers": []string{layName}}})
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	for _, e := range []struct {
		name string
		body []byte
	}{{confName, conf}, {layName, lay}, {"manifest.json", manifest}} {
		h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.body)), ModTime: stamp, Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("write archive of %s: %w", ref, err)
		}
		if _, err := tw.Write(e.body); err != nil {
			return fmt.Errorf("write archive of %s: %w", ref, err)
		}
	}
	return tw.Close()
}

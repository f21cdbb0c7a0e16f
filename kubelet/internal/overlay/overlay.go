// Package overlay lays this project's darwin files over the upstream Kubernetes modules at build
// time, as a `go build -overlay` map: nothing of upstream's source is copied into this
// repository, and nothing in the Go module cache is changed.
//
// A spec (kubelet/overlay/*.spec) has one change per line:
//
//	retag <module>/<path> | <old build constraint> | <new build constraint>
//	patch <module>/<path> | <old text> | <new text> | <count>
//	copy  <module>/<path> | <old build constraint> | <new build constraint> | <new file name>
//
// retag rewrites a file's //go:build line (to take an upstream file out of, or into, the darwin
// build); patch replaces text that must occur exactly <count> times; copy adds a retagged copy of
// an upstream file to its package under a new name (a file named *_linux.go is Linux-only by its
// name, whatever its //go:build line says, so taking it into the Mac's build needs a copy). Both fail when upstream's
// file is not what the spec expects, which is how a new minor announces what moved. Files under
// an add directory (overlay/_add/<module>/<path>, and overlay/_add-<minor>/ for one minor;
// underscored, so that the go command does not take them for packages of this module) are added to upstream's packages as they are.
package overlay

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Change is one line of a spec.
type Change struct {
	Kind   string // "retag" or "patch"
	Module string // "kubernetes", "mount-utils"
	Path   string // within the module
	Old    string
	New    string
	Count  int    // patch only
	As     string // copy only: the new file's name
	Line   int
}

// ParseSpec reads a spec; blank lines and lines starting with # are skipped.
func ParseSpec(r io.Reader) ([]Change, error) {
	var out []Change
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kind, rest, ok := strings.Cut(line, " ")
		if !ok {
			return nil, fmt.Errorf("line %d: no fields: %q", n, line)
		}
		fields := strings.Split(rest, " | ")
		for i := range fields {
			fields[i] = strings.TrimSpace(fields[i])
		}
		c := Change{Kind: kind, Line: n}
		switch kind {
		case "retag":
			if len(fields) != 3 {
				return nil, fmt.Errorf("line %d: retag wants <file> | <old> | <new>", n)
			}
		case "copy":
			if len(fields) != 4 || strings.ContainsAny(fields[3], "/\\") || !strings.HasSuffix(fields[3], ".go") {
				return nil, fmt.Errorf("line %d: copy wants <file> | <old> | <new> | <new name>.go", n)
			}
			c.As = fields[3]
		case "patch":
			if len(fields) != 4 {
				return nil, fmt.Errorf("line %d: patch wants <file> | <old> | <new> | <count>", n)
			}
			count, err := strconv.Atoi(fields[3])
			if err != nil || count < 1 {
				return nil, fmt.Errorf("line %d: count %q is not a positive number", n, fields[3])
			}
			c.Count = count
		default:
			return nil, fmt.Errorf("line %d: unknown change %q", n, kind)
		}
		mod, path, ok := strings.Cut(fields[0], "/")
		if !ok || path == "" || strings.Contains(path, "..") {
			return nil, fmt.Errorf("line %d: %q is not <module>/<path>", n, fields[0])
		}
		c.Module, c.Path, c.Old, c.New = mod, path, fields[1], fields[2]
		out = append(out, c)
	}
	return out, sc.Err()
}

// Overlay is the JSON `go build -overlay` reads.
type Overlay struct {
	Replace map[string]string
}

// Build writes the changed files under out and returns the overlay: roots maps a module name
// to the directory of its (pristine) source; add is the directory of files to add.
func Build(changes []Change, add string, roots map[string]string, out string) (*Overlay, error) {
	ov := &Overlay{Replace: map[string]string{}}
	// Several changes to one file apply in order, to one copy.
	type pending struct {
		text string
		dst  string
	}
	files := map[string]*pending{}
	var order []string
	for _, c := range changes {
		root, ok := roots[c.Module]
		if !ok {
			return nil, fmt.Errorf("spec line %d: unknown module %q", c.Line, c.Module)
		}
		src := filepath.Join(root, filepath.FromSlash(c.Path))
		if c.Kind == "copy" {
			b, err := os.ReadFile(src)
			if err != nil {
				return nil, fmt.Errorf("spec line %d: %w", c.Line, err)
			}
			text, err := Retag(string(b), c.Old, c.New)
			if err != nil {
				return nil, fmt.Errorf("spec line %d (%s/%s): %w", c.Line, c.Module, c.Path, err)
			}
			rel := filepath.Join(filepath.Dir(filepath.FromSlash(c.Path)), c.As)
			at := filepath.Join(root, rel)
			if _, err := os.Stat(at); err == nil {
				return nil, fmt.Errorf("spec line %d: %s exists upstream", c.Line, at)
			}
			dst := filepath.Join(out, c.Module, rel)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return nil, err
			}
			if err := os.WriteFile(dst, []byte(text), 0o644); err != nil {
				return nil, err
			}
			ov.Replace[at] = dst
			continue
		}
		p, seen := files[src]
		if !seen {
			b, err := os.ReadFile(src)
			if err != nil {
				return nil, fmt.Errorf("spec line %d: %w", c.Line, err)
			}
			p = &pending{text: string(b), dst: filepath.Join(out, c.Module, filepath.FromSlash(c.Path))}
			files[src] = p
			order = append(order, src)
		}
		var err error
		switch c.Kind {
		case "retag":
			p.text, err = Retag(p.text, c.Old, c.New)
		case "patch":
			p.text, err = Patch(p.text, c.Old, c.New, c.Count)
		}
		if err != nil {
			return nil, fmt.Errorf("spec line %d (%s/%s): %w", c.Line, c.Module, c.Path, err)
		}
	}
	for _, src := range order {
		p := files[src]
		if err := os.MkdirAll(filepath.Dir(p.dst), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p.dst, []byte(p.text), 0o644); err != nil {
			return nil, err
		}
		ov.Replace[src] = p.dst
	}
	if add != "" {
		err := filepath.WalkDir(add, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
				return err
			}
			rel, err := filepath.Rel(add, path)
			if err != nil {
				return err
			}
			mod, inMod, ok := strings.Cut(filepath.ToSlash(rel), "/")
			root, known := roots[mod]
			if !ok || !known {
				return fmt.Errorf("%s: not under a known module directory", path)
			}
			dst := filepath.Join(root, filepath.FromSlash(inMod))
			if _, err := os.Stat(dst); err == nil {
				return fmt.Errorf("%s would replace upstream's %s: retag or patch it instead", path, dst)
			}
			abs, err := filepath.Abs(path)
			if err != nil {
				return err
			}
			ov.Replace[dst] = abs
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return ov, nil
}

// Retag replaces the //go:build line, which must be exactly old, and drops the old-style
// "// +build" lines that older minors still carry beside it.
func Retag(text, old, new string) (string, error) {
	lines := strings.SplitAfter(text, "\n")
	found := false
	for i, l := range lines {
		t := strings.TrimRight(l, "\r\n")
		if strings.HasPrefix(t, "package ") {
			break
		}
		if c, ok := strings.CutPrefix(t, "//go:build "); ok {
			if strings.TrimSpace(c) != old {
				return "", fmt.Errorf("build constraint is %q, the spec expects %q", c, old)
			}
			lines[i] = "//go:build " + new + "\n"
			found = true
		} else if strings.HasPrefix(t, "// +build ") {
			lines[i] = "\n"
		}
	}
	if !found {
		return "", fmt.Errorf("no //go:build line (the spec expects %q)", old)
	}
	return strings.Join(lines, ""), nil
}

// Patch replaces old by new, which must occur exactly count times.
func Patch(text, old, new string, count int) (string, error) {
	old, new = unescape(old), unescape(new)
	if n := strings.Count(text, old); n != count {
		return "", fmt.Errorf("%q occurs %d times, the spec expects %d", old, n, count)
	}
	return strings.ReplaceAll(text, old, new), nil
}

// unescape lets a spec write a newline or tab as \n, \t.
func unescape(s string) string {
	return strings.NewReplacer(`\n`, "\n", `\t`, "\t").Replace(s)
}

// WriteJSON writes the overlay with sorted keys (a reproducible file).
func (o *Overlay) WriteJSON(path string) error {
	keys := make([]string, 0, len(o.Replace))
	for k := range o.Replace {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Command overlay writes the `go build -overlay` map that lays this project's darwin files over
// the upstream Kubernetes modules (see internal/overlay). scripts/build-kubelet.sh runs it.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"darwin-cri.io/kubelet/internal/overlay"
)

type roots map[string]string

func (r roots) String() string { return fmt.Sprint(map[string]string(r)) }
func (r roots) Set(v string) error {
	k, d, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("want <module>=<dir>, got %q", v)
	}
	r[k] = d
	return nil
}

func main() {
	var specs, adds []string
	r := roots{}
	flag.Func("spec", "a spec file (repeatable)", func(s string) error { specs = append(specs, s); return nil })
	flag.Func("add", "a directory of files to add (repeatable)", func(s string) error { adds = append(adds, s); return nil })
	flag.Var(r, "root", "<module>=<source dir> (repeatable)")
	out := flag.String("out", "", "directory for changed files")
	js := flag.String("json", "", "overlay JSON to write")
	flag.Parse()
	if err := run(specs, adds, r, *out, *js); err != nil {
		fmt.Fprintln(os.Stderr, "overlay:", err)
		os.Exit(1)
	}
}

func run(specs, adds []string, r roots, out, js string) error {
	var changes []overlay.Change
	for _, s := range specs {
		f, err := os.Open(s)
		if err != nil {
			return err
		}
		c, err := overlay.ParseSpec(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
		changes = append(changes, c...)
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	merged := &overlay.Overlay{Replace: map[string]string{}}
	first := true
	for _, a := range append([]string{""}, adds...) {
		var cs []overlay.Change
		if first {
			cs = changes
		}
		o, err := overlay.Build(cs, a, r, out)
		if err != nil {
			return err
		}
		for k, v := range o.Replace {
			if _, dup := merged.Replace[k]; dup {
				return fmt.Errorf("%s is laid over twice", k)
			}
			merged.Replace[k] = v
		}
		first = false
	}
	return merged.WriteJSON(js)
}

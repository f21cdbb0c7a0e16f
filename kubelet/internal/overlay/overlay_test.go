package overlay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSpecRetagPatchAndAdd(t *testing.T) {
	dir := t.TempDir()
	up := filepath.Join(dir, "up")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(up, "pkg"), 0o755))
	must(os.WriteFile(filepath.Join(up, "pkg", "a_linux.go"), []byte("//go:build linux\n// +build linux\n\npackage pkg\n\nvar os = goruntime.GOOS + goruntime.GOOS\n"), 0o644))
	add := filepath.Join(dir, "add")
	must(os.MkdirAll(filepath.Join(add, "kubernetes", "pkg"), 0o755))
	must(os.WriteFile(filepath.Join(add, "kubernetes", "pkg", "ours.go"), []byte("package pkg\n"), 0o644))
	spec := `# a comment
retag kubernetes/pkg/a_linux.go | linux | linux && !darwincri
patch kubernetes/pkg/a_linux.go | goruntime.GOOS | nodeOS | 2
`
	changes, err := ParseSpec(strings.NewReader(spec))
	must(err)
	out := filepath.Join(dir, "out")
	ov, err := Build(changes, add, map[string]string{"kubernetes": up}, out)
	must(err)
	got, err := os.ReadFile(ov.Replace[filepath.Join(up, "pkg", "a_linux.go")])
	must(err)
	want := "//go:build linux && !darwincri\n\n\npackage pkg\n\nvar os = nodeOS + nodeOS\n"
	if string(got) != want {
		t.Fatalf("got %q", got)
	}
	if ov.Replace[filepath.Join(up, "pkg", "ours.go")] == "" {
		t.Fatalf("added file missing: %v", ov.Replace)
	}
	// A Linux-named file copied into another build under a new name.
	cs, err := ParseSpec(strings.NewReader("copy kubernetes/pkg/a_linux.go | linux | darwin && darwincri | a_darwincri.go\n"))
	must(err)
	ov, err = Build(cs, "", map[string]string{"kubernetes": up}, out)
	must(err)
	got, err = os.ReadFile(ov.Replace[filepath.Join(up, "pkg", "a_darwincri.go")])
	must(err)
	if !strings.HasPrefix(string(got), "//go:build darwin && darwincri\n") {
		t.Fatalf("copy: %q", got)
	}
	// Upstream moved: the spec no longer matches, and says so.
	for _, bad := range []string{
		"retag kubernetes/pkg/a_linux.go | !windows | x\n",
		"patch kubernetes/pkg/a_linux.go | goruntime.GOOS | x | 1\n",
		"retag kubernetes/pkg/gone.go | linux | x\n",
		"frob kubernetes/pkg/a_linux.go | a | b\n",
		"retag kubernetes/../etc/passwd | a | b\n",
		"copy kubernetes/pkg/a_linux.go | linux | x | ../a.go\n",
		"copy kubernetes/pkg/a_linux.go | linux | x | a_linux.go\n",
	} {
		cs, err := ParseSpec(strings.NewReader(bad))
		if err == nil {
			_, err = Build(cs, "", map[string]string{"kubernetes": up}, out)
		}
		if err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	// An added file may not hide an upstream one.
	must(os.WriteFile(filepath.Join(add, "kubernetes", "pkg", "a_linux.go"), []byte("package pkg\n"), 0o644))
	if _, err := Build(nil, add, map[string]string{"kubernetes": up}, out); err == nil {
		t.Error("an added file replaced upstream's silently")
	}
}

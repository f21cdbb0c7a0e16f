package safepath

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolveKeepsSubpathsInTheirVolume(t *testing.T) {
	dir := t.TempDir()
	vol := filepath.Join(dir, "vol")
	outside := filepath.Join(dir, "outside")
	for _, d := range []string{filepath.Join(vol, "a", "b"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("a/b", filepath.Join(vol, "inside")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(vol, "escape")); err != nil {
		t.Fatal(err)
	}
	got, err := Resolve(filepath.Join(vol, "inside"), vol)
	if err != nil || !strings.HasSuffix(got, "/vol/a/b") {
		t.Fatalf("inside: %q %v", got, err)
	}
	if _, err := Resolve(filepath.Join(vol, "escape"), vol); err == nil {
		t.Fatal("a symlink out of the volume was followed")
	}
	if _, err := Resolve(filepath.Join(vol, "..", "outside"), vol); err == nil {
		t.Fatal("a path out of the volume was accepted")
	}
}

func TestMakeDirRefusesSymlinks(t *testing.T) {
	dir := t.TempDir()
	vol := filepath.Join(dir, "vol")
	outside := filepath.Join(dir, "outside")
	for _, d := range []string{vol, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := MakeDir(filepath.Join(vol, "x", "y"), vol, 0o750); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(vol, "x", "y")); err != nil || !st.IsDir() {
		t.Fatalf("not made: %v", err)
	}
	if err := os.Symlink(outside, filepath.Join(vol, "link")); err != nil {
		t.Fatal(err)
	}
	if err := MakeDir(filepath.Join(vol, "link", "z"), vol, 0o755); err == nil {
		t.Fatal("made a directory through a symlink")
	}
	if _, err := os.Stat(filepath.Join(outside, "z")); err == nil {
		t.Fatal("a directory was made outside the volume")
	}
	if err := MakeDir(filepath.Join(dir, "elsewhere"), vol, 0o755); err == nil {
		t.Fatal("a path outside the base was made")
	}
}

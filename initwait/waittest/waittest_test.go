package waittest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFormatIsTheKubeletsFormat(t *testing.T) {
	got := string(Format(map[string]string{
		"b.example.com/x": "say \"hi\"\nbye ✓\x00",
		"a":               "",
	}))
	want := "a=\"\"\nb.example.com/x=\"say \\\"hi\\\"\\nbye ✓\\x00\""
	if got != want {
		t.Errorf("Format =\n%s\nwant\n%s", got, want)
	}
	if got := Format(nil); len(got) != 0 {
		t.Errorf("Format(nil) = %q, want empty", got)
	}
}

func TestWriteAtomicLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "podinfo")
	for i, content := range []string{"one", "two"} {
		if err := WriteAtomic(dir, map[string][]byte{"annotations": []byte(content)}); err != nil {
			t.Fatal(err)
		}
		if link, err := os.Readlink(filepath.Join(dir, "annotations")); err != nil || link != "..data/annotations" {
			t.Errorf("annotations -> %q (%v), want ..data/annotations", link, err)
		}
		data, err := os.Readlink(filepath.Join(dir, "..data"))
		if err != nil || !strings.HasPrefix(data, "..") {
			t.Errorf("..data -> %q (%v), want a hidden timestamped directory", data, err)
		}
		if got, err := os.ReadFile(filepath.Join(dir, "annotations")); err != nil || string(got) != content {
			t.Errorf("write %d: annotations reads %q (%v), want %q", i, got, err, content)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 3 {
			t.Errorf("write %d: %d entries in the volume, want 3 (the file's link, ..data, one timestamped directory)", i, len(entries))
		}
	}
}

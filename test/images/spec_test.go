package images

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The committed Dockerfile is the one the specs generate: the Docker build and the local build
// pack the same contents.
func TestDockerfileIsGenerated(t *testing.T) {
	want, err := Dockerfile(All())
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Dockerfile differs from the one test/images/spec.go generates; run\n"+
			"  go run ./test/images/cmd/build-images -dockerfile Dockerfile\n--- committed\n%s\n--- generated\n%s", got, want)
	}
	for _, line := range []string{
		"FROM scratch AS wait\n",
		"COPY --from=build /out/istio-pod-network-wait /istio-pod-network-wait\nUSER 1337:1337\nENTRYPOINT [\"/istio-pod-network-wait\"]\n",
		"FROM debian:trixie-slim AS controller\n",
		"apt-get install -y --no-install-recommends iptables util-linux \\\n && rm -rf /var/lib/apt/lists/*\n",
		"USER 0:0\nENTRYPOINT [\"/usr/local/bin/istio-pod-network-controller\"]\nCMD [\"run\"]\n",
	} {
		if !bytes.Contains(want, []byte(line)) {
			t.Errorf("generated Dockerfile lacks %q", line)
		}
	}
	// The controller is the default target: the last stage.
	if i, j := bytes.Index(want, []byte("AS wait")), bytes.Index(want, []byte("AS controller")); i < 0 || j < i {
		t.Errorf("want the wait stage before the controller stage (the default target)")
	}
}

func TestSpecValidate(t *testing.T) {
	for _, s := range All() {
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", s.Target, err)
		}
	}
	bad := map[string]struct {
		edit func(*Spec)
		want string
	}{
		"target":             {func(s *Spec) { s.Target = "Wait Stage" }, `target "Wait Stage"`},
		"suite":              {func(s *Spec) { s.Base.Suite = "trixie;rm" }, `base suite "trixie;rm"`},
		"package":            {func(s *Spec) { s.Base.Packages = []string{"iptables", "x && curl"} }, `base package "x && curl"`},
		"packages, no suite": {func(s *Spec) { s.Base = Base{Packages: []string{"iptables"}} }, `need a suite`},
		"no files":           {func(s *Spec) { s.Files = nil }, "files: none"},
		"binary":             {func(s *Spec) { s.Files[0].Binary = "../etc/passwd" }, `file binary "../etc/passwd"`},
		"relative path":      {func(s *Spec) { s.Files[0].Path = "usr/bin/x" }, `path "usr/bin/x"`},
		"dot-dot path":       {func(s *Spec) { s.Files[0].Path = "/usr/../x" }, `path "/usr/../x"`},
		"space in path":      {func(s *Spec) { s.Files[0].Path = "/usr/bin/a b" }, `element "a b"`},
		"user name":          {func(s *Spec) { s.User = "root" }, `user "root"`},
		"user, no gid":       {func(s *Spec) { s.User = "1337:" }, `user "1337:": "" is not a decimal ID`},
		"user, sign":         {func(s *Spec) { s.User = "+1:1" }, `"+1" is not a decimal ID`},
		"no entrypoint":      {func(s *Spec) { s.Entrypoint = nil }, "entrypoint: empty"},
		"quote in cmd":       {func(s *Spec) { s.Cmd = []string{`run"`} }, `argument "run\""`},
	}
	for name, c := range bad {
		t.Run(name, func(t *testing.T) {
			s := Controller
			s.Files = append([]File(nil), s.Files...)
			s.Base.Packages = append([]string(nil), s.Base.Packages...)
			c.edit(&s)
			err := s.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate() = %v, want an error with %q", err, c.want)
			}
			if _, err := Dockerfile([]Spec{s}); err == nil {
				t.Fatalf("Dockerfile accepted the spec Validate refuses")
			}
		})
	}
}

// The cache key follows everything that decides the root file system's contents.
func TestCacheKey(t *testing.T) {
	base := Controller.Base
	key := CacheKey(base)
	if !strings.HasPrefix(key, "trixie-") || key != CacheKey(Base{Suite: "trixie", Packages: []string{"iptables", "util-linux"}}) {
		t.Fatalf("CacheKey(%v) = %q, want a stable trixie-<hash>", base, key)
	}
	for name, other := range map[string]Base{
		"package added": {Suite: "trixie", Packages: []string{"iptables", "util-linux", "nftables"}},
		"package gone":  {Suite: "trixie", Packages: []string{"iptables"}},
		"other suite":   {Suite: "forky", Packages: []string{"iptables", "util-linux"}},
	} {
		if CacheKey(other) == key {
			t.Errorf("%s: same cache key %q as %v", name, key, base)
		}
	}
}

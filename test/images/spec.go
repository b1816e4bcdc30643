package images

import (
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// Spec describes one image of the project: what it holds and how it starts. The Dockerfile is
// generated from the specs (see Dockerfile) and the local build (see Build) packs the same contents,
// so the two cannot disagree.
type Spec struct {
	// Target is the Dockerfile stage (`docker build --target`), e.g. "controller".
	Target string
	// Name is the image's name under the repository, e.g. "istio-pod-network-controller".
	Name string
	// Comment is written above the stage in the Dockerfile, one line per element.
	Comment []string
	// Base is the root file system under the files: scratch or Debian packages.
	Base Base
	// Files are binaries built by `make build`, copied into the image.
	Files []File
	// User is the numeric "UID:GID" the entrypoint runs as.
	User string
	// Entrypoint and Cmd are the image's ENTRYPOINT and CMD (exec form).
	Entrypoint []string
	Cmd        []string
}

// Base is an image's root file system below its files. The zero value is scratch (nothing).
type Base struct {
	// Suite is a Debian release name (e.g. "trixie"); empty means scratch.
	Suite string
	// Packages are installed without their recommends, as `apt-get install --no-install-recommends`
	// does, on top of the suite's essential packages and apt.
	Packages []string
}

// Scratch reports whether the base is empty.
func (b Base) Scratch() bool { return b.Suite == "" }

// File is one binary of `make build` and where it lands in the image (mode 0755, owned by root).
type File struct {
	// Binary is the file name in `make build`'s output directory.
	Binary string
	// Path is the absolute path in the image.
	Path string
}

// Path is the PATH of both images, the one Debian's images and Docker's scratch images carry.
const Path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Controller is the node controller's image (the Dockerfile's default, last, stage). iptables brings
// iptables-legacy-* and iptables-nft-* (and ip6tables-*): the controller uses the node's backend.
// util-linux brings nsenter, used for pods with their own user namespace.
var Controller = Spec{
	Target: "controller",
	Name:   "istio-pod-network-controller",
	Comment: []string{
		"The node controller (the default target). iptables brings iptables-legacy-* and iptables-nft-*",
		"(and ip6tables-*): the controller uses the node's backend. util-linux brings nsenter, used for pods",
		"with their own user namespace.",
	},
	Base:       Base{Suite: "trixie", Packages: []string{"iptables", "util-linux"}},
	Files:      []File{{Binary: "istio-pod-network-controller", Path: "/usr/local/bin/istio-pod-network-controller"}},
	User:       "0:0",
	Entrypoint: []string{"/usr/local/bin/istio-pod-network-controller"},
	Cmd:        []string{"run"},
}

// Wait is the init container of every mesh pod: the static wait binary alone. The injection template
// runs it as istio-proxy's UID/GID; 1337 is Istio's default.
var Wait = Spec{
	Target: "wait",
	Name:   "istio-pod-network-wait",
	Comment: []string{
		"The init container of every mesh pod: nothing but the static binary. The injection template runs",
		"it as istio-proxy's UID/GID; 1337 is Istio's default.",
	},
	Files:      []File{{Binary: "istio-pod-network-wait", Path: "/istio-pod-network-wait"}},
	User:       "1337:1337",
	Entrypoint: []string{"/istio-pod-network-wait"},
}

// All lists the project's images in Dockerfile order (the default target last).
func All() []Spec { return []Spec{Wait, Controller} }

var (
	// Debian policy: lower case letters, digits, + - and . ; at least two characters.
	debianPackage = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	word          = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
	pathElem      = regexp.MustCompile(`^[A-Za-z0-9._+-]+$`)
)

// Validate checks every field that reaches the Dockerfile, mmdebstrap's arguments or the image
// config, and names the first bad one with its value.
func (s Spec) Validate() error {
	if !word.MatchString(s.Target) {
		return fmt.Errorf("image spec: target %q: want lower-case letters, digits, '.', '_' or '-'", s.Target)
	}
	if !word.MatchString(s.Name) {
		return fmt.Errorf("image %s: name %q: want lower-case letters, digits, '.', '_' or '-'", s.Target, s.Name)
	}
	if err := s.Base.Validate(); err != nil {
		return fmt.Errorf("image %s: %w", s.Target, err)
	}
	if len(s.Files) == 0 {
		return fmt.Errorf("image %s: files: none", s.Target)
	}
	for _, f := range s.Files {
		if !word.MatchString(f.Binary) {
			return fmt.Errorf("image %s: file binary %q: want a plain file name", s.Target, f.Binary)
		}
		if err := checkImagePath(f.Path); err != nil {
			return fmt.Errorf("image %s: file %s: %w", s.Target, f.Binary, err)
		}
	}
	if err := checkUser(s.User); err != nil {
		return fmt.Errorf("image %s: %w", s.Target, err)
	}
	if len(s.Entrypoint) == 0 {
		return fmt.Errorf("image %s: entrypoint: empty", s.Target)
	}
	for _, a := range append(append([]string{}, s.Entrypoint...), s.Cmd...) {
		if a == "" || strings.ContainsAny(a, "\"\\\n") {
			return fmt.Errorf("image %s: entrypoint/cmd argument %q: empty or with a quote, backslash or newline", s.Target, a)
		}
	}
	return nil
}

// Validate checks the suite's and the packages' names, which reach mmdebstrap and the Dockerfile.
func (b Base) Validate() error {
	if !b.Scratch() && !word.MatchString(b.Suite) {
		return fmt.Errorf("base suite %q: not a Debian release name", b.Suite)
	}
	if b.Scratch() && len(b.Packages) > 0 {
		return fmt.Errorf("base packages %q need a suite", b.Packages)
	}
	for _, p := range b.Packages {
		if !debianPackage.MatchString(p) {
			return fmt.Errorf("base package %q: not a Debian package name", p)
		}
	}
	return nil
}

// checkImagePath accepts a clean absolute path other than "/" made of plain names.
func checkImagePath(p string) error {
	if p == "/" || !path.IsAbs(p) || path.Clean(p) != p {
		return fmt.Errorf("path %q: want a clean absolute path to a file", p)
	}
	for _, part := range strings.Split(p[1:], "/") {
		if !pathElem.MatchString(part) || part == "." || part == ".." {
			return fmt.Errorf("path %q: element %q: want letters, digits, '.', '_', '+' or '-'", p, part)
		}
	}
	return nil
}

// checkUser accepts the numeric "UID:GID" form, which needs no /etc/passwd in the image.
func checkUser(u string) error {
	uid, gid, ok := strings.Cut(u, ":")
	if !ok {
		return fmt.Errorf("user %q: want numeric UID:GID", u)
	}
	for _, id := range []string{uid, gid} {
		if n, err := strconv.ParseUint(id, 10, 32); err != nil || strconv.FormatUint(n, 10) != id {
			return fmt.Errorf("user %q: %q is not a decimal ID", u, id)
		}
	}
	return nil
}

// Command build-images builds the project's container images without a Docker engine (see package
// images), or writes the Dockerfile generated from the same specs:
//
//	build-images -bin bin -out bin/images -repo ghcr.io/redhat-cop -version v1   # `make images`
//	build-images -dockerfile Dockerfile                                          # regenerate it
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/redhat-cop/istio-pod-network-controller/test/images"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "build-images:", err)
		os.Exit(1)
	}
}

func run() error {
	cache, err := images.DefaultCacheDir()
	if err != nil {
		return err
	}
	dockerfile := flag.String("dockerfile", "", "write the generated Dockerfile to this file and exit")
	o := images.Options{Specs: images.All(), Progress: os.Stdout}
	flag.StringVar(&o.BinDir, "bin", "bin", "directory of the binaries built by `make build`")
	flag.StringVar(&o.OutDir, "out", "bin/images", "directory the image archives are written to")
	flag.StringVar(&o.Repo, "repo", "ghcr.io/redhat-cop", "image repository of the tags")
	flag.StringVar(&o.Version, "version", "dev", "image tag")
	flag.StringVar(&o.CacheDir, "cache", cache, "cache of Debian root file systems")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if *dockerfile != "" {
		data, err := images.Dockerfile(o.Specs)
		if err != nil {
			return err
		}
		return os.WriteFile(*dockerfile, data, 0o644)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err = images.Build(ctx, o)
	return err
}

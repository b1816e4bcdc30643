// Command standin is the real node's stand-in for the containers of a mesh pod, a static binary
// packed into small test images (see test/realnode):
//
//	standin pause   the sandbox ("pause") process: sleeps until SIGTERM or SIGINT
//	standin proxy   istio-proxy (also as `proxy sidecar ARGS...`, pilot-agent's command line in the
//	                injected container, when the binary is the proxyv2 stand-in's entrypoint): on 15001 (outbound) and 15006 (inbound) answers each connection
//	                with "<port> <original destination>" (SO_ORIGINAL_DST, the local address when
//	                nothing redirected it) and logs it; answers HTTP 200 on 15021 (/healthz/ready)
//	                and 15020 (the injector's /app-health/... probes)
//	standin app     the application: answers "app <local address>" on 8080
//	standin init    an application's init container: prints a line and exits 0
//	standin request ARGS...
//	                pilot-agent's `request ... POST drain`, the native sidecar's preStop hook: there
//	                is no Envoy to drain, it exits 0
//	standin istio-iptables ARGS...
//	                istio-init: runs Istio's real pilot-agent (istioPilotAgent, in the proxyv2
//	                stand-in image) with the same arguments
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"

	"github.com/redhat-cop/istio-pod-network-controller/initwait"
)

// istioPilotAgent is Istio's pilot-agent in the proxyv2 stand-in image (test/images.ProxyStandin).
const istioPilotAgent = "/usr/local/bin/istio-pilot-agent"

func main() {
	if len(os.Args) < 2 || (len(os.Args) > 2 && !slices.Contains([]string{"proxy", "istio-iptables", "request"}, os.Args[1])) {
		fmt.Fprintln(os.Stderr, "usage: standin pause|proxy|app|init, standin proxy|request|istio-iptables ARGS...")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "request":
		return
	case "istio-iptables":
		err := syscall.Exec(istioPilotAgent, append([]string{istioPilotAgent}, os.Args[1:]...), os.Environ())
		fmt.Fprintln(os.Stderr, "standin: run Istio's pilot-agent:", err)
		os.Exit(1)
	case "pause":
	case "proxy":
		for _, port := range []string{"15001", "15006"} {
			go serveTCP(port, port)
		}
		for _, port := range []string{"15020", "15021"} {
			go serveHTTP(port)
		}
	case "app":
		go serveTCP("8080", "app")
	case "init":
		fmt.Println("standin: init done")
		return
	default:
		fmt.Fprintf(os.Stderr, "standin: unknown mode %q (want pause, proxy, app or init)\n", os.Args[1])
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

// serveTCP answers every connection on port with "<name> <original destination>".
func serveTCP(port, name string) {
	l, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, "standin:", err)
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "standin:", err)
			os.Exit(1)
		}
		dst := c.LocalAddr().String()
		if orig, err := initwait.OriginalDst(c.(*net.TCPConn)); err == nil {
			dst = orig.String()
		}
		fmt.Printf("%s connection from %s to %s\n", name, c.RemoteAddr(), dst)
		fmt.Fprintf(c, "%s %s\n", name, dst)
		c.Close()
	}
}

func serveHTTP(port string) {
	err := http.ListenAndServe(":"+port, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	}))
	fmt.Fprintln(os.Stderr, "standin:", err)
	os.Exit(1)
}

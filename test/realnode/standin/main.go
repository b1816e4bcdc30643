// Command standin is the real node's stand-in for the containers of a mesh pod, a static binary
// packed into small test images (see test/realnode):
//
//	standin pause   the sandbox ("pause") process: sleeps until SIGTERM or SIGINT
//	standin proxy   istio-proxy: on 15001 (outbound) and 15006 (inbound) answers each connection
//	                with "<port> <original destination>" (SO_ORIGINAL_DST, the local address when
//	                nothing redirected it) and logs it; answers HTTP 200 on 15021 (/healthz/ready)
//	                and 15020 (the injector's /app-health/... probes)
//	standin app     the application: answers "app <local address>" on 8080
//	standin init    an application's init container: prints a line and exits 0
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/redhat-cop/istio-pod-network-controller/initwait"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: standin pause|proxy|app|init")
		os.Exit(2)
	}
	switch os.Args[1] {
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

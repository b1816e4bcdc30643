// Command probe is the end-to-end tests' TCP client, run inside pod network namespaces as an
// application or proxy UID: `probe ADDR` connects to ADDR (host:port), prints the first line the
// server sends and exits 0; it prints the error and exits 1 when the connection fails.
package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: probe HOST:PORT")
		os.Exit(2)
	}
	line, err := dial(os.Args[1])
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(line)
}

func dial(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

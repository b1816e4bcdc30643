package controller

import (
	"fmt"
	"net/http"
)

// HealthHandler serves /healthz (the process answers) and /readyz (ready() is true: the backend is
// detected, the pod cache synced and the workers run), for GET and HEAD, and nothing else (404).
func HealthHandler(ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready: backend detection or pod cache sync pending", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

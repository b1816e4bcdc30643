package fleet

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// NodeNameExtra is the user extra the API server puts in every request made with a token bound to
// a pod on a node: it tells the controllers apart in the audit log, as their ServiceAccount is
// the same.
const NodeNameExtra = "authentication.kubernetes.io/node-name"

// AuditPolicy records the fleet's requests, those of every ServiceAccount of namespace, at
// Metadata level (no bodies), when the response starts (a watch is open) and when it completes;
// nothing else is logged.
func AuditPolicy(namespace string) string {
	return `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts:` + namespace + `"]
- level: None
`
}

// AuditEvent is the part of an audit.k8s.io/v1 Event the benchmark reads.
type AuditEvent struct {
	AuditID    string `json:"auditID"` // the same for every stage of one request
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string              `json:"username"`
		Extra    map[string][]string `json:"extra"`
	} `json:"user"`
	ObjectRef struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	ResponseStatus struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	StageTimestamp time.Time `json:"stageTimestamp"`
}

// Node is the node name bound to the request's token ("" for other users).
func (e *AuditEvent) Node() string {
	if v := e.User.Extra[NodeNameExtra]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Key is "verb resource[/subresource]", as in the request tables.
func (e *AuditEvent) Key() string {
	r := e.ObjectRef.Resource
	if e.ObjectRef.Subresource != "" {
		r += "/" + e.ObjectRef.Subresource
	}
	return e.Verb + " " + r
}

// WatchOpened reports whether the event is a pod watch whose response started with 200: the
// watch is open from StageTimestamp on.
func (e *AuditEvent) WatchOpened() bool {
	return e.Stage == "ResponseStarted" && e.Verb == "watch" && e.ObjectRef.Resource == "pods" &&
		e.ObjectRef.Subresource == "" && e.ResponseStatus.Code == 200
}

// Relist reports whether the request fetches the full state again: a LIST, or a watch asking for
// the initial events (the streaming list of client-go's WatchListClient).
func (e *AuditEvent) Relist() bool {
	return e.Verb == "list" || e.Verb == "watch" && strings.Contains(e.RequestURI, "sendInitialEvents=true")
}

// Counted reports whether the event stands for one request: a request is logged when it completes;
// a watch also when it opens, and that entry is the one counted.
func (e *AuditEvent) Counted() bool {
	if e.Verb == "watch" {
		return e.Stage == "ResponseStarted" || e.Stage == "ResponseComplete" && e.ResponseStatus.Code != 200
	}
	return e.Stage == "ResponseComplete"
}

// AuditLog reads an API server's audit log as it grows.
type AuditLog struct {
	Path   string
	offset int64
}

// Next returns the events appended since the previous call (complete lines only).
func (a *AuditLog) Next() ([]AuditEvent, error) {
	f, err := os.Open(a.Path)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	if _, err := f.Seek(a.offset, io.SeekStart); err != nil {
		return nil, fmt.Errorf("audit log %s: %w", a.Path, err)
	}
	var out []AuditEvent
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			return out, nil // a partial last line is read next time
		}
		if err != nil {
			return nil, fmt.Errorf("audit log %s: %w", a.Path, err)
		}
		a.offset += int64(len(line))
		var ev AuditEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil, fmt.Errorf("audit log %s at byte %d: %w", a.Path, a.offset-int64(len(line)), err)
		}
		out = append(out, ev)
	}
}

//go:build !linux

package record

import "errors"

var errNotLinux = errors.New("the release record needs Linux (rtnetlink)")

// ReadAlias is Linux-only.
func ReadAlias() (string, error) { return "", errNotLinux }

// Read is Linux-only.
func Read() (Record, error) { return Record{}, errNotLinux }

// WriteAlias is Linux-only.
func WriteAlias(string) error { return errNotLinux }

// Write is Linux-only.
func Write(Record) error { return errNotLinux }

// Clear is Linux-only.
func Clear() error { return errNotLinux }

// Watcher is Linux-only.
type Watcher struct{}

// NewWatcher is Linux-only.
func NewWatcher() (*Watcher, error) { return nil, errNotLinux }

// Next is Linux-only.
func (*Watcher) Next() error { return errNotLinux }

// Close is Linux-only.
func (*Watcher) Close() error { return nil }

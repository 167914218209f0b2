//go:build linux

package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// newWorkspace creates a fresh private TMPDIR under
// TempDir/pkgfleet-workspaces. The name carries the worker's pid so that
// CleanStale can tell a dead worker's leftovers from a live one's.
func newWorkspace(tempDir string) (string, error) {
	parent, err := workspaceRoot(tempDir)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(parent, fmt.Sprintf("ws-%d-", os.Getpid()))
	if err != nil {
		return "", fmt.Errorf("workspace: %w", err)
	}
	return dir, nil // MkdirTemp creates it 0700
}

// workspaceRoot makes tempDir/pkgfleet-workspaces if it is missing and
// returns its path. It is 0711 whatever the umask: a run-as user can
// reach its own workspace but not list others.
func workspaceRoot(tempDir string) (string, error) {
	if tempDir == "" {
		tempDir = os.TempDir()
	}
	parent := filepath.Join(tempDir, WorkspacesDir)
	if err := os.MkdirAll(tempDir, 0o755); err != nil {
		return "", fmt.Errorf("workspace: %w", err)
	}
	err := os.Mkdir(parent, 0o711)
	if err == nil {
		err = os.Chmod(parent, 0o711)
	} else if errors.Is(err, fs.ErrExist) {
		err = nil
	}
	if err != nil {
		return "", fmt.Errorf("workspace: %w", err)
	}
	return parent, nil
}

// removeWorkspace deletes a workspace even when the build left
// directories without write or search permission in it.
func removeWorkspace(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700) // WalkDir never follows links, so this stays inside
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove workspace: %w", err)
	}
	return nil
}

// CleanStale removes the per-build TMPDIRs that a killed worker left under
// cfg.TempDir/pkgfleet-workspaces. Workspaces of live processes (another
// worker sharing the TempDir) are kept. Call it once at worker start.
func CleanStale(cfg Config) error {
	tempDir := cfg.TempDir
	if tempDir == "" {
		tempDir = os.TempDir()
	}
	parent := filepath.Join(tempDir, WorkspacesDir)
	entries, err := os.ReadDir(parent)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clean stale workspaces: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "ws-") {
			continue
		}
		if pid, ok := workspacePID(name); ok && pid != os.Getpid() && alive(pid) {
			continue
		}
		if pid, ok := workspacePID(name); ok && pid == os.Getpid() {
			continue
		}
		if err := removeWorkspace(filepath.Join(parent, name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func workspacePID(name string) (int, bool) {
	f := strings.SplitN(name, "-", 3)
	if len(f) < 3 {
		return 0, false
	}
	pid, err := strconv.Atoi(f[1])
	return pid, err == nil
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// envWithTMPDIR returns env with TMPDIR set to dir, replacing any TMPDIR
// the caller passed (libc's getenv returns the first match).
func envWithTMPDIR(env []string, dir string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if !strings.HasPrefix(kv, "TMPDIR=") {
			out = append(out, kv)
		}
	}
	return append(out, "TMPDIR="+dir)
}

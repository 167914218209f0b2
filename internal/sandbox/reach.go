//go:build linux

package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The sandbox needs more than the kernel's user namespaces: a build user
// with ids this worker can hand out, and directories that user can reach.
// New checks those first, before any namespace is made, so that a refusal
// names the setting or directory at fault rather than a failed open deep
// in the set-up, which reads like a kernel problem.

// PreconditionError is New's refusal when something the sandbox needs
// that is not a kernel feature is missing: the build user, its ids, or a
// directory it must reach. Its message is one line that names the cause
// and the remedy.
type PreconditionError struct{ msg string }

func (e *PreconditionError) Error() string { return "sandbox: " + e.msg }

func preconditionf(format string, a ...any) error {
	return &PreconditionError{msg: fmt.Sprintf(format, a...)}
}

// buildUser is who the sandbox's processes run as on the host.
type buildUser struct {
	uid, gid int
	name     string // the account's name, "" when it has none
	// dropped: the worker is root and starts the sandbox as uid:gid with
	// no supplementary groups, so reachability is checked with those ids.
	dropped bool
}

func (u buildUser) String() string {
	if u.name == "" {
		return fmt.Sprintf("uid %d (gid %d)", u.uid, u.gid)
	}
	return fmt.Sprintf("%s (uid %d, gid %d)", u.name, u.uid, u.gid)
}

// short is the user's name, else its uid, for the remedy.
func (u buildUser) short() string {
	if u.name == "" {
		return "uid " + strconv.Itoa(u.uid)
	}
	return u.name
}

// resolveBuildUser is who builds run as: the worker itself, or as root
// Server.RunAsUser, by default a dedicated "pkgfleet" account, else
// "nobody". Root itself is refused: builds never run as host root.
func resolveBuildUser(runAs string) (buildUser, error) {
	if os.Geteuid() != 0 {
		u := buildUser{uid: os.Getuid(), gid: os.Getgid()}
		if acc, err := user.LookupId(strconv.Itoa(u.uid)); err == nil {
			u.name = acc.Username
		}
		return u, nil
	}
	var acc *user.User
	var err error
	switch {
	case runAs != "":
		if acc, err = user.Lookup(runAs); err != nil {
			id, nerr := strconv.Atoi(runAs)
			if nerr != nil {
				return buildUser{}, preconditionf("the build user %q (Server.RunAsUser) does not exist; "+
					"remedy: create it (useradd --system %s) or set Server.RunAsUser to an unprivileged user that exists", runAs, runAs)
			}
			if acc, err = user.LookupId(runAs); err != nil {
				// A bare numeric id without a passwd entry is fine.
				acc = &user.User{Uid: runAs, Gid: strconv.Itoa(id)}
			}
		}
	default:
		if acc, err = user.Lookup("pkgfleet"); err != nil {
			if acc, err = user.Lookup("nobody"); err != nil {
				acc = &user.User{Uid: "65534", Gid: "65534"}
			}
		}
	}
	u := buildUser{name: acc.Username, dropped: true}
	u.uid, _ = strconv.Atoi(acc.Uid)
	u.gid, _ = strconv.Atoi(acc.Gid)
	if u.uid == 0 || u.gid == 0 {
		return buildUser{}, preconditionf("the build user %s (Server.RunAsUser %q) is root; builds must run unprivileged; "+
			"remedy: set Server.RunAsUser to an unprivileged user", u, runAs)
	}
	return u, nil
}

// checkPreconditions checks what the sandbox needs of u and of cfg's
// directories: u's ids are mapped in this worker's user namespace, the
// workspace root is the worker's own and lets u in, and u can traverse
// every directory on the way to it and to cfg.WorkDir.
func checkPreconditions(cfg Config, u buildUser) error {
	for _, m := range []struct{ file, what string }{{"/proc/self/uid_map", "uid"}, {"/proc/self/gid_map", "gid"}} {
		id := u.uid
		if m.what == "gid" {
			id = u.gid
		}
		mapped, ranges, err := idMapped(m.file, id)
		if err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
		if !mapped {
			return preconditionf("the build user %s has no %s in this worker's user namespace (%s: %s); "+
				"remedy: set Server.RunAsUser to a user whose ids are mapped", u, m.what, m.file, ranges)
		}
	}
	ws, err := workspaceRoot(cfg.TempDir)
	if err != nil {
		return preconditionf("cannot make the workspace root: %v; remedy: set Server.TempDir to a directory the worker can write", err)
	}
	if err := checkWorkspaceRoot(ws, u); err != nil {
		return err
	}
	for _, d := range []struct{ path, setting string }{
		{ws, "Server.TempDir"},
		{cfg.WorkDir, "Server.DataDir or Git.BuilderDir"},
	} {
		if d.path == "" {
			continue
		}
		if err := checkReach(d.path, d.setting, u); err != nil {
			return err
		}
	}
	return nil
}

// checkWorkspaceRoot checks that ws is a directory of the worker's own
// that no one else may write, for another user could swap a build's
// workspace, and that u may enter it.
func checkWorkspaceRoot(ws string, u buildUser) error {
	var st unix.Stat_t
	if err := unix.Lstat(ws, &st); err != nil {
		return fmt.Errorf("sandbox: workspace root: %w", err)
	}
	remedy := "remedy: remove it (the worker makes it anew, mode 0711) or set Server.TempDir to another directory"
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return preconditionf("the workspace root %s is not a directory; %s", ws, remedy)
	case int(st.Uid) != os.Geteuid():
		return preconditionf("the workspace root %s (%s) is not the worker's own (uid %d); %s", ws, describe(&st), os.Geteuid(), remedy)
	case st.Mode&0o022 != 0:
		return preconditionf("the workspace root %s (%s) is writable by others; %s", ws, describe(&st), remedy)
	case u.dropped && st.Mode&0o001 == 0:
		return preconditionf("the build user %s cannot enter the workspace root %s (%s); remedy: chmod 0711 %s, or remove it (the worker makes it anew, mode 0711)",
			u, ws, describe(&st), ws)
	}
	return nil
}

// checkReach checks that u can traverse every directory from / down to
// dir. Directories that do not exist yet are the worker's to make.
func checkReach(dir, setting string, u buildUser) error {
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		dir = r // the sandbox opens the symlink-free path
	}
	blocked, err := blocker(filepath.Clean(dir), u)
	if err != nil {
		return fmt.Errorf("sandbox: check that the build user can reach %s: %w", dir, err)
	}
	if blocked == "" {
		return nil
	}
	var st unix.Stat_t
	how := "owner and mode unknown"
	if unix.Stat(blocked, &st) == nil {
		how = describe(&st)
	}
	return preconditionf("the build user %s cannot traverse %s (%s) on the way to %s (%s); "+
		"remedy: set %s to a directory %s can traverse, all the way down (e.g. one of its own under /var/tmp)",
		u, blocked, how, dir, setting, setting, u.short())
}

// blocker returns the first directory on the absolute path dir that u
// cannot search, or "" when u reaches dir (or as far as it exists).
func blocker(dir string, u buildUser) (string, error) {
	walk := func() (string, error) {
		for _, p := range ancestry(dir) {
			// Opening p/. needs search permission on p and on every
			// directory above it, exactly what reaching below p needs;
			// the kernel decides, ACLs included.
			fd, err := unix.Open(strings.TrimSuffix(p, "/")+"/.", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			switch {
			case err == nil:
				unix.Close(fd)
			case errors.Is(err, unix.EACCES):
				return p, nil
			case errors.Is(err, unix.ENOENT):
				return "", nil
			default:
				return "", fmt.Errorf("%s: %w", p, err)
			}
		}
		return "", nil
	}
	if !u.dropped {
		return walk()
	}
	return asBuildUser(u, walk)
}

// ancestry is dir and every directory above it, from / down.
func ancestry(dir string) []string {
	var out []string
	for p := dir; ; p = filepath.Dir(p) {
		out = append(out, p)
		if p == "/" || p == "." {
			break
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// asBuildUser runs fn on an OS thread of its own whose filesystem ids are
// u's, with no supplementary groups, as the sandbox's processes will have
// (launch.go). Only that thread changes: the ids set by these raw system
// calls are per thread (glibc, not the kernel, makes them process-wide),
// and the thread is never unlocked, so it ends with the goroutine and no
// other goroutine ever runs with its ids.
func asBuildUser(u buildUser, fn func() (string, error)) (string, error) {
	type result struct {
		p   string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
			ch <- result{err: fmt.Errorf("setgroups: %w", e)}
			return
		}
		// setfsgid and setfsuid return the previous id and no error:
		// a second call with -1 reads back what took effect.
		unix.RawSyscall(unix.SYS_SETFSGID, uintptr(u.gid), 0, 0)
		unix.RawSyscall(unix.SYS_SETFSUID, uintptr(u.uid), 0, 0)
		gid, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, ^uintptr(0), 0, 0)
		uid, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, ^uintptr(0), 0, 0)
		if int(uid) != u.uid || int(gid) != u.gid {
			ch <- result{err: fmt.Errorf("could not take the ids of the build user %s", u)}
			return
		}
		p, err := fn()
		ch <- result{p, err}
	}()
	r := <-ch
	return r.p, r.err
}

// idMapped reports whether id is inside a range of the id map file (ids
// as this process sees them), and the ranges for a message. A missing
// file (no user namespaces) maps everything.
func idMapped(file string, id int) (bool, string, error) {
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return true, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("read id map: %w", err)
	}
	defer f.Close()
	var ranges []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			continue
		}
		first, err1 := strconv.ParseInt(fields[0], 10, 64)
		count, err2 := strconv.ParseInt(fields[2], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		if int64(id) >= first && int64(id) < first+count {
			return true, "", nil
		}
		ranges = append(ranges, strings.Join(fields, " "))
	}
	if err := sc.Err(); err != nil {
		return false, "", fmt.Errorf("read %s: %w", file, err)
	}
	return false, strings.Join(ranges, "; "), nil
}

// describe is a directory's owner and mode as ls would show them:
// "owner root:root, mode 0700".
func describe(st *unix.Stat_t) string {
	owner, group := strconv.Itoa(int(st.Uid)), strconv.Itoa(int(st.Gid))
	if u, err := user.LookupId(owner); err == nil {
		owner = u.Username
	}
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	return fmt.Sprintf("owner %s:%s, mode %04o", owner, group, st.Mode&0o7777)
}

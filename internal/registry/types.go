// Package registry keeps pkgfleet's state in Redis: sources, git-builders,
// builds (with their artifact lists, and their logs until they finished:
// internal/buildlog moves a finished one into the artifact store), per
// source the builds its index can serve (served.go), and the per-commit
// claim that makes a poll, a webhook and a manual run of one sha build
// once.
//
// It validates what it stores and guarantees that a rejected request
// stores nothing. Its records have the API's shapes (internal/apiv1,
// named here too). It does not enqueue work (internal/queue does) and it
// does not touch Git or the file system.
package registry

import (
	"errors"
	"fmt"

	"github.com/pkgfleet/pkgfleet/internal/apiv1"
)

// The records, in the API's shapes.
type (
	Source    = apiv1.Source
	Builder   = apiv1.Builder
	Build     = apiv1.Build
	Artifact  = apiv1.Artifact
	StoredLog = apiv1.StoredLog
	Duration  = apiv1.Duration
	Phase     = apiv1.Phase
	Check     = apiv1.Check
)

// Source types, languages, build triggers, statuses, phases and check
// verdicts (see apiv1).
const (
	TypeGit       = apiv1.TypeGit
	TypeGitPython = apiv1.TypeGitPython

	LangR      = apiv1.LangR
	LangPython = apiv1.LangPython

	TriggerCommits = apiv1.TriggerCommits
	TriggerTags    = apiv1.TriggerTags

	StatusQueued    = apiv1.StatusQueued
	StatusWaiting   = apiv1.StatusWaiting
	StatusRunning   = apiv1.StatusRunning
	StatusSucceeded = apiv1.StatusSucceeded
	StatusFailed    = apiv1.StatusFailed
	StatusCanceled  = apiv1.StatusCanceled

	PhaseQueued       = apiv1.PhaseQueued
	PhaseWaiting      = apiv1.PhaseWaiting
	PhaseClone        = apiv1.PhaseClone
	PhaseSandboxStart = apiv1.PhaseSandboxStart
	PhaseBuild        = apiv1.PhaseBuild
	PhaseCheck        = apiv1.PhaseCheck
	PhaseChecks       = apiv1.PhaseChecks
	PhaseStore        = apiv1.PhaseStore
	PhaseRecord       = apiv1.PhaseRecord

	CheckOK      = apiv1.CheckOK
	CheckNote    = apiv1.CheckNote
	CheckWarning = apiv1.CheckWarning
	CheckError   = apiv1.CheckError
	CheckFailed  = apiv1.CheckFailed
)

// Terminal reports whether a build in status s will not change again.
func Terminal(s string) bool { return apiv1.Terminal(s) }

// LanguageOf maps a source type to its language ("" if unknown).
func LanguageOf(sourceType string) string { return apiv1.LanguageOf(sourceType) }

// Errors a caller can tell apart (the API maps them to status codes).
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("conflict")
)

// ValidationError is bad input; its message is safe to show the user.
type ValidationError struct{ Msg string }

func (e *ValidationError) Error() string { return e.Msg }

func invalid(format string, args ...any) error {
	return &ValidationError{Msg: fmt.Sprintf(format, args...)}
}

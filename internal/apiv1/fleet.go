package apiv1

import "time"

// Worker is one worker process as it last reported itself.
type Worker struct {
	Name      string                    `json:"name"`
	Host      string                    `json:"host"`
	PID       int                       `json:"pid"`
	Languages map[string]WorkerLanguage `json:"languages"` // by language ("r", "python")
	// SandboxTier is the tier of the worker's sandbox: "full",
	// "masked-proc", or "none" when it is unusable (docs/sandbox.md).
	SandboxTier string `json:"sandbox_tier"`
	// SandboxRefusal is why the sandbox is unusable when SandboxTier is
	// "none": the line pkgfleet-worker sandbox check prints.
	SandboxRefusal string `json:"sandbox_refusal,omitempty"`
	// StoreRefusal is why the worker takes no builds although it could
	// build: its artifact store failed the startup check (one line
	// naming the bucket, the endpoint and the error).
	StoreRefusal string `json:"store_refusal,omitempty"`
	Slots        int    `json:"slots"` // builds at once (Worker.Concurrency, capped)
	Running      int    `json:"running_builds"`
	// MaxUserNamespaces is /proc/sys/user/max_user_namespaces (-1 when
	// unreadable).
	MaxUserNamespaces int `json:"max_user_namespaces"`
	// NamespacesNeeded is what its slots need when all build sandboxed
	// (roster.NamespacesPerBuild × Slots); NamespacesInUse is what its
	// running sandboxed builds use now.
	NamespacesNeeded int       `json:"namespaces_needed"`
	NamespacesInUse  int       `json:"namespaces_in_use"`
	StartedAt        time.Time `json:"started_at"`
	LastSeen         time.Time `json:"last_seen"`
}

// WorkerLanguage is one language a worker builds.
type WorkerLanguage struct {
	Version string `json:"version"`
	Path    string `json:"path"`
	Sandbox string `json:"sandbox"` // the runner's Mode: "user-namespace" or "unsandboxed"
	// Platform is what the worker's R binaries and platform wheels are
	// built for: its os-release ID-VERSION_ID ("debian-12").
	Platform string `json:"platform,omitempty"`
}

// Sandboxed reports whether any of w's languages builds in the sandbox.
func (w *Worker) Sandboxed() bool {
	for _, l := range w.Languages {
		if l.Sandbox == "user-namespace" {
			return true
		}
	}
	return false
}

// Budget is PPM's user-namespace requirement for the configured builders.
type Budget struct {
	Formula          string `json:"formula"`
	TagBuilders      int    `json:"tag_builders"`
	CommitBuilders   int    `json:"commit_builders"`
	BuildConcurrency int    `json:"build_concurrency"`
	// Required is ((tag builders × BuildConcurrency) + commit builders) ×
	// roster.NamespacesPerBuild: what the fleet needs when every builder
	// builds at its limit.
	Required int `json:"required"`
	// FleetSlots and FleetNamespaces are what the live sandboxed workers
	// can run and may use at most.
	FleetSlots      int `json:"fleet_slots"`
	FleetNamespaces int `json:"fleet_namespaces"`
	// Workers whose slots need more namespaces than their host allows.
	Warnings []string `json:"warnings"`
}

// WorkerNamespaces is one worker's line of the namespace budget.
type WorkerNamespaces struct {
	Name              string `json:"name"`
	Slots             int    `json:"slots"`
	Needed            int    `json:"needed"`
	MaxUserNamespaces int    `json:"max_user_namespaces"`
	InUse             int    `json:"in_use"`
	OK                bool   `json:"ok"`
}

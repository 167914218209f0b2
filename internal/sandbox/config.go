package sandbox

// Config is what every runner needs to know about the service around it:
// the directories to hide from builds, where per-build TMPDIRs live, who
// builds run as, and the default limits.
type Config struct {
	DataDir          string   // Server.DataDir: masked
	BuilderDir       string   // Git.BuilderDir: masked except this build's checkout
	ConfigDir        string   // directory of the config file: masked
	SockFileDir      string   // Server.SockFileDir: masked
	StorageLocations []string // every FileStorage.Location, and the AWS web-identity token's directory: masked
	TempDir          string   // Server.TempDir: parent of pkgfleet-workspaces
	WorkDir          string   // Git.BuilderDir/work: builds' Source and Dest, which the build user must reach
	RunAsUser        string   // Server.RunAsUser: name or numeric uid; "" = invoking user
	Defaults         Limits   // limits for a Spec that sets none
	// Tier forces a sandbox tier (tests, and operators who want masked-proc
	// refused); empty means the best the host allows: full, else masked-proc.
	Tier Tier
	// MaxLandlockABI caps the Landlock ABI the sandbox uses (tests of the
	// paths older kernels take); 0 means what the kernel offers.
	MaxLandlockABI int
}

// WorkspacesDir is the directory under TempDir that holds one private
// TMPDIR per build process; it is masked inside every sandbox.
const WorkspacesDir = "pkgfleet-workspaces"

package retention

// StatusPath is the gateway's retention status endpoint, served over mutual TLS to the
// operator only (gateway.StatusServer): the workloads hold no Kubernetes credentials, so the
// operator fetches each tenant's last sweep and writes it into the RetentionPolicy's and the
// LegalHolds' status itself.
const StatusPath = "/v1/retention/status"

// Status is the answer of StatusPath: the tenant's last sweep as the store keeps it, nil
// before the first. It holds counts, times and the names of the policy and of holds: nothing
// about a message or a patient.
type Status struct {
	Tenant    string  `json:"tenant"`
	LastSweep *Result `json:"lastSweep"`
}

"""spd-investigate: specs, submission, the job body, agent back ends, lockdown, swarms. Never
imports torch."""

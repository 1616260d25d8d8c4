"""The wallet's decisions as plain Python (no Qt): effects of a frame, the accountant,
approvals, composing transactions, onboarding. Tested headless; ``wallet/views``
draws them."""

"""tutormax: real-time and batch tutor performance metrics for the TutorMax marketplace."""

__version__ = "0.1.0"

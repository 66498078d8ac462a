"""tune-eegpt: a correctly scheduled linear probe on a frozen EEGPT encoder, and its search."""

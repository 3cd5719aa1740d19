"""The cloud: AS + NMS (+ TRS) in one process, the embedded default. It only
composes what the auth, nms and trs packages each own."""

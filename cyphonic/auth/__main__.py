from cyphonic.cloud.run import main

main("cyphonic.auth", with_auth=True, with_nms=False)
